"""Numbers in messages: "1 image", "2 images", "10,000 images"."""


def plural(count: int, noun: str) -> str:
    """'1 image', '2 images', '10,000 images' (nouns whose plural adds an s)."""
    return f"{count:,} {noun}{'' if count == 1 else 's'}"
