"""Numbers in messages: "1 image", "2 images", "10,000 images", and how fast they went."""


def plural(count: int, noun: str) -> str:
    """'1 image', '2 images', '10,000 images' (nouns whose plural adds an s)."""
    return f"{count:,} {noun}{'' if count == 1 else 's'}"


def images_per_second(count: int, seconds: float) -> str:
    """'10,000 images in 2.5 s, 4,000 images/s': how many images a command went through,
    and how fast."""
    rate = count / seconds if seconds > 0 else float("inf")
    return f"{plural(count, 'image')} in {seconds:,.1f} s, {rate:,.0f} images/s"
