"""The post's convolutional autoencoder in PyTorch: the reference our speed is measured against.

The same function as our model (a test copies our weights in and compares outputs), so
the same 7,873 weights for [16, 8, 8] on 28x28x1; the same initialisation (Keras'
he_normal, zero biases), loss (sigmoid cross-entropy on logits plus L2 1e-5 / 2 on
kernels), optimiser (Adam with Keras' epsilon, 0.001 x 0.96 every 1,000 steps,
staircase) and batch (256, last partial batch dropped).
`PhotoAutoencoder` mirrors the model `train --data_dir DIR` chooses for a folder of 64x64
colour photographs (image_defaults.py), and `train_examples` trains either model as a
PyTorch user would on stored images: a `Dataset` over a sequence of examples (a folder's
image files, PIL-decoded and resized; a TFDS data source's records, which TFDS decodes;
IDX arrays, each image made a PIL image as torchvision's MNIST dataset does), each made a
float tensor, and a `DataLoader` with workers.
Benchmarks only: PyTorch is not a dependency of tf-autoencoder (pip install torch==2.13.0).
"""
from __future__ import annotations

import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


def _he_normal_(weight):
    """Keras' he_normal: a normal of stddev sqrt(2 / fan_in) truncated at two of its
    (pre-truncation) stddevs, rescaled by 1 / 0.8796 so the variance is 2 / fan_in. fan_in
    is PyTorch's, weight.shape[1] * kernel area, which for a transposed conv counts its
    output channels, as Keras does for Conv2DTranspose."""
    fan_in = weight.shape[1] * weight[0, 0].numel()
    std = (2.0 / fan_in) ** 0.5 / 0.87962566103423978
    nn.init.trunc_normal_(weight, std=std, a=-2 * std, b=2 * std)


class _DropLastRowAndColumn(nn.Module):
    def forward(self, x):
        return x[:, :, :-1, :-1]


class ConvAutoencoder(nn.Module):
    """images (batch, C, H, W) -> logits of the same shape."""

    def __init__(self, image_shape=(1, 28, 28), num_filters=(16, 8, 8)):
        super().__init__()
        channels, self.height, self.width = image_shape
        self.encoder = nn.ModuleList()
        in_channels = channels
        for filters in num_filters:
            self.encoder.append(nn.Sequential(
                nn.Conv2d(in_channels, filters, 3, padding=1), nn.ReLU(),
                nn.Conv2d(filters, filters, 3, padding=1), nn.ReLU()))
            in_channels = filters
        self.decoder = nn.Sequential()
        for filters in reversed(num_filters):
            # TF's stride-2 'same' transposed conv is PyTorch's unpadded one (2H + 1 rows)
            # without its last row and column; padding=1, output_padding=1 would shift it.
            self.decoder.append(nn.ConvTranspose2d(in_channels, filters, 3, 2))
            self.decoder.append(_DropLastRowAndColumn())
            self.decoder.append(nn.ReLU())
            in_channels = filters
        self.decoder.append(nn.ConvTranspose2d(in_channels, channels, 3, padding=1))
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
                _he_normal_(module.weight)
                nn.init.zeros_(module.bias)

    def encode(self, x):
        for block in self.encoder:
            x = F.pad(x, (0, x.shape[3] % 2, 0, x.shape[2] % 2))  # odd -> even, bottom/right
            x = F.max_pool2d(block(x), 2)
        return x

    def forward(self, x):
        y = self.decoder(self.encode(x))
        top, left = (y.shape[2] - self.height) // 2, (y.shape[3] - self.width) // 2
        return y[:, :, top:top + self.height, left:left + self.width]

    def kernel_l2(self):
        return sum((m.weight ** 2).sum() for m in self.modules()
                   if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)))


class PhotoAutoencoder(nn.Module):
    """The photographs' model of the same size as ours (image_defaults.photo_filters: 32,
    64, 64 for 64x64): per block two 3x3 ReLU convs and a stride-2 3x3 ReLU conv; a flat
    code of `code_size` values (a conv over the whole last map) plus a linear path (one
    dense layer on the pixels, one back); a 'valid' transposed conv from the code back to
    the map, stride-2 3x3 ReLU transposed convs and a linear 3x3 one to the pixels, whose
    logits add to the linear path's. Differences from ours: PyTorch's symmetric padding
    of the stride-2 convs (TF pads bottom/right only; the same work), and the linear path
    starts at random, not at PCA (which changes what is learnt, not a step's cost)."""

    def __init__(self, image_shape=(3, 64, 64), num_filters=(32, 64, 64), code_size=64):
        super().__init__()
        channels, height, width = self.image_shape = image_shape
        layers, in_channels = [], channels
        for filters in num_filters:
            layers += [nn.Conv2d(in_channels, filters, 3, padding=1), nn.ReLU(),
                       nn.Conv2d(filters, filters, 3, padding=1), nn.ReLU(),
                       nn.Conv2d(filters, filters, 3, stride=2, padding=1), nn.ReLU()]
            in_channels = filters
        self.encoder = nn.Sequential(*layers)
        side = height // 2 ** len(num_filters)
        self.code = nn.Conv2d(in_channels, code_size, side)
        self.expand = nn.ConvTranspose2d(code_size, in_channels, side)
        layers = [nn.ReLU()]
        for filters in reversed(num_filters):
            layers += [nn.ConvTranspose2d(in_channels, filters, 3, stride=2, padding=1,
                                          output_padding=1), nn.ReLU()]
            in_channels = filters
        layers.append(nn.ConvTranspose2d(in_channels, channels, 3, padding=1))
        self.decoder = nn.Sequential(*layers)
        self.linear_encode = nn.Linear(channels * height * width, code_size)
        self.linear_decode = nn.Linear(code_size, channels * height * width)
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
                _he_normal_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, x):
        code = self.code(self.encoder(x)) + self.linear_encode(x.flatten(1))[:, :, None, None]
        pixels = self.linear_decode(code.flatten(1)).clamp(1e-4, 1 - 1e-4).view_as(x)
        return self.decoder(self.expand(code)) + torch.log(pixels) - torch.log1p(-pixels)

    def kernel_l2(self):
        return sum((m.weight ** 2).sum() for m in self.modules()
                   if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)))


class Images(torch.utils.data.Dataset):
    """A PyTorch user's dataset over a sequence of `examples` (image files' paths, a TFDS
    data source): `pixels(example)` gives an example's image as uint8 (H, W, C), made a
    float tensor (C, H, W) in [0, 1] here, as torchvision's ToTensor would (without
    torchvision: numpy, then torch)."""

    def __init__(self, examples, pixels):
        self.examples, self.pixels = examples, pixels

    def __len__(self):
        return len(self.examples)

    def __getitem__(self, index):
        pixels = self.pixels(self.examples[index])
        return torch.from_numpy(pixels).permute(2, 0, 1).float().div_(255)


def idx_image(image: np.ndarray) -> np.ndarray:
    """An IDX array's image (H, W, 1) as torchvision's MNIST and FashionMNIST datasets
    give it to their transform: made a PIL image first, which ToTensor turns back into an
    array (without torchvision: PIL, then numpy)."""
    from PIL import Image

    return np.array(Image.fromarray(image[..., 0], mode="L"), np.uint8)[..., None]


class ImageFile:
    """An image file's pixels as a PyTorch user reads them: PIL decodes the file, converts
    it to the channels of `image_shape` (H, W, C) and resizes it to its size if it is
    another."""

    def __init__(self, image_shape):
        height, width, channels = image_shape
        self.size, self.mode = (height, width), "L" if channels == 1 else "RGB"

    def __call__(self, path) -> np.ndarray:
        from PIL import Image

        with Image.open(path) as image:
            image = image.convert(self.mode)
            if image.size != self.size[::-1]:
                image = image.resize(self.size[::-1], Image.BILINEAR)
            return np.array(image, np.uint8).reshape(*self.size, -1)  # a writable copy


def image_files(paths, image_shape) -> Images:
    """The dataset of the image files at `paths`, read as (H, W, C) `image_shape`."""
    return Images(list(paths), ImageFile(image_shape))


def tfds_image(example) -> np.ndarray:
    """A TFDS data source's example's image, uint8 (H, W, C): the source decoded it
    (OpenCV where installed, else PIL) when the example was read."""
    return example["image"]


def loader(dataset, *, batch_size, workers, shuffle, seed=0):
    """DataLoader over `dataset` with `workers` worker processes, which stay between epochs
    (persistent_workers: no start-up cost per epoch)."""
    return torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, shuffle=shuffle, drop_last=shuffle,
        num_workers=workers, persistent_workers=workers > 0,
        generator=torch.Generator().manual_seed(seed))


def model_and_loss(model: str, loss: str, image_shape):
    """(the reference's model, its loss on logits and images): model "post"
    (ConvAutoencoder) or "photo" (PhotoAutoencoder) for (H, W, C) images; loss "bce" (on
    logits) or "mse" (on sigmoid(logits))."""
    height, width, channels = image_shape
    net = (ConvAutoencoder((channels, height, width)) if model == "post"
           else PhotoAutoencoder((channels, height, width)))
    loss_of = (F.binary_cross_entropy_with_logits if loss == "bce"
               else (lambda logits, x: F.mse_loss(torch.sigmoid(logits), x)))
    return net, loss_of


def adam(model):
    return torch.optim.Adam(model.parameters(), lr=1e-3, eps=1e-7)  # Keras' epsilon


def update(model, optimizer, loss_of, batch, weight_decay):
    """One update on `batch`, with the L2 weight decay of our kernels."""
    loss = loss_of(model(batch), batch) + weight_decay / 2 * model.kernel_l2()
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


def train_examples(train_set, test_set, image_shape, *, model: str, epochs: int,
                   batch_size: int, workers: int, threads: int = 2, seed: int = 0, loss="bce",
                   lr_decay_steps=1000, lr_decay_rate=0.96, weight_decay=1e-5,
                   max_steps: int | None = None, before_epoch=None):
    """`train` on the datasets `train_set` and `test_set` (Images of (H, W, C)
    `image_shape`) read through `loader`: model "post" (ConvAutoencoder) or "photo"
    (PhotoAutoencoder); loss "bce" (on logits) or "mse" (on sigmoid(logits)).
    Returns per-epoch images/s and the final test loss ("test_loss")."""
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    net, loss_of = model_and_loss(model, loss, image_shape)
    batches = loader(train_set, batch_size=batch_size, workers=workers, shuffle=True, seed=seed)
    speeds = _fit(net, loss_of, lambda: batches, epochs=epochs, batch_size=batch_size,
                  steps_per_epoch=min(len(batches), max_steps or len(batches)),
                  lr_decay_steps=lr_decay_steps, lr_decay_rate=lr_decay_rate,
                  weight_decay=weight_decay, before_epoch=before_epoch)
    net.eval()
    with torch.no_grad():
        test = loader(test_set, batch_size=1000, workers=0, shuffle=False)
        test_loss = float(np.mean([loss_of(net(x), x).item() for x in test]))
    return {"images_per_second": speeds, "test_loss": test_loss,
            "weights": sum(p.numel() for p in net.parameters())}


def _fit(model, loss_of, epoch_batches, *, epochs, batch_size, steps_per_epoch, lr_decay_steps,
         lr_decay_rate, weight_decay, before_epoch):
    """Trains `epochs` epochs of `steps_per_epoch` batches of epoch_batches() (called once
    per epoch); returns each epoch's images/s (the clock starts after before_epoch)."""
    optimizer = adam(model)
    schedule = torch.optim.lr_scheduler.StepLR(optimizer, step_size=lr_decay_steps,
                                               gamma=lr_decay_rate)
    images_per_second = []
    for _ in range(epochs):
        if before_epoch:
            before_epoch(images_per_second)
        model.train()
        start = time.perf_counter()
        batches = iter(epoch_batches())
        for _ in range(steps_per_epoch):
            update(model, optimizer, loss_of, next(batches), weight_decay)
            schedule.step()
        images_per_second.append(steps_per_epoch * batch_size / (time.perf_counter() - start))
    return images_per_second


def train(train_images: np.ndarray, test_images: np.ndarray, *, epochs: int, batch_size=256,
          threads: int = 2, seed: int = 0, weight_decay=1e-5, max_steps: int | None = None,
          before_epoch=None):
    """Trains on uint8 (N, H, W, C) images; returns per-epoch images/s and the final test BCE.

    `before_epoch(images_per_second)`, if given, runs before each epoch's clock starts, with
    the list of the epochs' images/s so far (the benchmark's head-to-head trains an epoch of
    our model there).
    """
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    x = torch.from_numpy(np.array(train_images)).permute(0, 3, 1, 2).float().div_(255).contiguous()
    x_test = torch.from_numpy(np.array(test_images)).permute(0, 3, 1, 2).float().div_(255).contiguous()
    model = ConvAutoencoder(tuple(x.shape[1:]))
    steps_per_epoch = len(x) // batch_size
    if max_steps:
        steps_per_epoch = min(steps_per_epoch, max_steps)

    def epoch_batches():
        order = torch.randperm(len(x))
        return (x[order[step * batch_size:(step + 1) * batch_size]]
                for step in range(steps_per_epoch))

    images_per_second = _fit(
        model, F.binary_cross_entropy_with_logits, epoch_batches, epochs=epochs,
        batch_size=batch_size, steps_per_epoch=steps_per_epoch, lr_decay_steps=1000,
        lr_decay_rate=0.96, weight_decay=weight_decay, before_epoch=before_epoch)
    model.eval()
    with torch.no_grad():
        test_bce = float(np.mean([
            F.binary_cross_entropy_with_logits(model(x_test[i:i + 1000]), x_test[i:i + 1000]).item()
            for i in range(0, len(x_test), 1000)]))
    return {"images_per_second": images_per_second, "test_bce": test_bce,
            "weights": sum(p.numel() for p in model.parameters())}


def loader_and_step_speeds(train_set, image_shape, *, model: str, loss: str, batch_size: int,
                           workers: int, threads: int = 2, steps: int = 30, rounds: int = 3
                           ) -> dict:
    """Where the reference's time goes, as images/s over `steps` batches (after one): the
    DataLoader over `train_set` alone (workers reading and decoding the examples), and
    the training step alone on batches already in memory (median of `rounds`), also per
    second of this process's CPU time ("step alone, CPU")."""
    torch.set_num_threads(threads)
    net, loss_of = model_and_loss(model, loss, image_shape)
    batches = iter(_forever(loader(train_set, batch_size=batch_size, workers=workers,
                                   shuffle=True)))
    next(batches)
    start = time.perf_counter()
    in_memory = [next(batches) for _ in range(steps)]
    result = {"loader alone": steps * batch_size / (time.perf_counter() - start)}
    optimizer = adam(net)
    update(net, optimizer, loss_of, in_memory[0], 1e-5)
    speeds, cpu_speeds = [], []
    for _ in range(rounds):
        start, cpu_start = time.perf_counter(), time.process_time()
        for batch in in_memory:
            update(net, optimizer, loss_of, batch, 1e-5)
        speeds.append(steps * batch_size / (time.perf_counter() - start))
        cpu_speeds.append(steps * batch_size / (time.process_time() - cpu_start))
    result["step alone"] = sorted(speeds)[len(speeds) // 2]
    result["step alone, CPU"] = sorted(cpu_speeds)[len(cpu_speeds) // 2]
    return result


def _forever(loader):
    while True:
        yield from loader
