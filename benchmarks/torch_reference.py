"""The post's convolutional autoencoder in PyTorch: the reference our speed is measured against.

The same function as our model (a test copies our weights in and compares outputs), so
the same 7,873 weights for [16, 8, 8] on 28x28x1; the same initialisation (Keras'
he_normal, zero biases), loss (sigmoid cross-entropy on logits plus L2 1e-5 / 2 on
kernels), optimiser (Adam with Keras' epsilon, 0.001 x 0.96 every 1,000 steps,
staircase) and batch (256, last partial batch dropped).
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
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, eps=1e-7)  # Keras' epsilon
    schedule = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1000, gamma=0.96)
    steps_per_epoch = len(x) // batch_size
    if max_steps:
        steps_per_epoch = min(steps_per_epoch, max_steps)
    images_per_second = []
    for _ in range(epochs):
        if before_epoch:
            before_epoch(images_per_second)
        order = torch.randperm(len(x))
        model.train()
        start = time.perf_counter()
        for step in range(steps_per_epoch):
            batch = x[order[step * batch_size:(step + 1) * batch_size]]
            loss = F.binary_cross_entropy_with_logits(model(batch), batch)
            loss = loss + weight_decay / 2 * model.kernel_l2()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
        images_per_second.append(steps_per_epoch * batch_size / (time.perf_counter() - start))
    model.eval()
    with torch.no_grad():
        test_bce = float(np.mean([
            F.binary_cross_entropy_with_logits(model(x_test[i:i + 1000]), x_test[i:i + 1000]).item()
            for i in range(0, len(x_test), 1000)]))
    return {"images_per_second": images_per_second, "test_bce": test_bce,
            "weights": sum(p.numel() for p in model.parameters())}
