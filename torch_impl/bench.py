"""torch_impl's runner for `alexnet bench` (alexnet_cli.bench_cmd drives it in its worker process), and the
torchvision AlexNet it is measured against."""
from __future__ import annotations

import os
import tempfile


class TorchRunner:
    """torch_impl: eager under inference_mode, or torch.compile; NCHW. On a GPU each step ends with a
    synchronize, so the host's clock sees the GPU's work."""

    yardstick_variants = ("torchvision",)  # timed beside torchvision's own AlexNet

    def __init__(self, device: str = "cpu", tf32: str | None = None):
        import torch
        from alexnet_parity import torch_impl
        self.torch, self.impl = torch, torch_impl
        self.versions = {"torch": torch.__version__}
        self.threads = torch.get_num_threads()
        self.gpu = device == "gpu"
        self.device = torch.device("cuda" if self.gpu else "cpu")  # a name only: CUDA starts in each child
        if self.gpu:
            torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = tf32 == "on"

    def check_device(self) -> str | None:
        """The GPU's name, or None on the CPU; raises where --device gpu finds none."""
        if not self.gpu:
            return None
        from alexnet_parity.torch_impl.run import torch_device
        torch_device("gpu")  # raises "torch sees no GPU ..."
        return self.torch.cuda.get_device_name()

    def build(self, spec, weights):
        return self.impl.build_model(spec, weights).to(self.device)

    def yardstick(self, spec, weights):
        """torchvision's AlexNet: the real one when torchvision imports, else the transcription below."""
        try:
            from torchvision.models import alexnet
            model, name = alexnet(num_classes=spec.num_classes), "torchvision.models.alexnet"
        except Exception:  # not installed, or installed but broken beside this torch build
            model, name = transcribed_torchvision_alexnet(spec.num_classes), "torchvision AlexNet (transcribed)"
        from alexnet_parity.weights_convert.torchvision import key_map

        model.load_state_dict({key: self.torch.from_numpy(weights[name]) for key, name in key_map("plain").items()})
        return model.to(self.device), name

    def inputs(self, x, labels):
        return self.torch.from_numpy(x).to(self.device), self.torch.from_numpy(labels).to(self.device)

    def _sync(self):
        if self.gpu:
            self.torch.cuda.synchronize()

    def step(self, model, path, mode, x, y):
        torch = self.torch
        if path == "compile":  # an empty inductor cache for each model: its first compile, as a user meets it
            os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="inductor-", dir=self.tmp)
        fn = torch.compile(model) if path == "compile" else model
        if mode == "infer":
            model.eval()

            def infer():
                with torch.inference_mode():
                    fn(x)
                self._sync()
            return infer
        model.train()

        def train():
            for p in model.parameters():
                p.grad = None
            torch.nn.functional.cross_entropy(fn(x), y).backward()
            self._sync()
        return train

    def conversion(self, spec, weights: dict, tmp: str):
        """(convert, plain, check, labels) for the bench's conversion timing: weights_convert canonical -> torch
        against plain torch.load + torch.save of the same tensors; check() says whether the result is bit-exact."""
        import numpy as np

        from alexnet_parity.weights_convert import load, save
        torch = self.torch
        src, dst, pt, pt2 = (os.path.join(tmp, n) for n in ("w.safetensors", "w.pt", "plain.pt", "plain2.pt"))
        save(src, spec, weights, fmt="canonical")
        torch.save({k: torch.from_numpy(v) for k, v in weights.items()}, pt)

        def convert():
            spec_in, w = load(src, variant=spec.variant)
            save(dst, spec_in, w, fmt="torch")

        def plain():
            torch.save(torch.load(pt), pt2)

        def check() -> bool:
            back = torch.load(dst)
            return all(np.array_equal(back[k].numpy(), v) for k, v in weights.items())
        return convert, plain, check, ("weights_convert canonical -> torch", "plain torch.load + torch.save")

    def output(self, model, x):
        with self.torch.inference_mode():
            return model.eval()(self.torch.from_numpy(x).to(self.device)).cpu().numpy()

    def matmul(self, n: int):
        a, b = (self.torch.randn(n, n, device=self.device) for _ in range(2))
        c = self.torch.empty(n, n, device=self.device)

        def mm():
            self.torch.mm(a, b, out=c)
            self._sync()
        return mm

    def memory_mb(self) -> float | None:
        """GPU memory the caching allocator has handed out; None on the CPU (the bench reads RSS there)."""
        return self.torch.cuda.memory_allocated() / 2**20 if self.gpu else None

    def reset_peak(self) -> None:
        self.torch.cuda.reset_peak_memory_stats()

    def peak_mb(self) -> float:
        return self.torch.cuda.max_memory_allocated() / 2**20


def transcribed_torchvision_alexnet(num_classes: int = 1000, dropout: float = 0.5):
    """The yardstick where torchvision does not import: the AlexNet class of torchvision/models/alexnet.py,
    transcribed verbatim (BSD-3-Clause, Copyright (c) Soumith Chintala 2016, all rights reserved) but for its
    `_log_api_usage_once(self)` telemetry line."""
    import torch
    import torch.nn as nn

    class AlexNet(nn.Module):
        def __init__(self, num_classes: int = 1000, dropout: float = 0.5) -> None:
            super().__init__()
            self.features = nn.Sequential(
                nn.Conv2d(3, 64, kernel_size=11, stride=4, padding=2),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(kernel_size=3, stride=2),
                nn.Conv2d(64, 192, kernel_size=5, padding=2),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(kernel_size=3, stride=2),
                nn.Conv2d(192, 384, kernel_size=3, padding=1),
                nn.ReLU(inplace=True),
                nn.Conv2d(384, 256, kernel_size=3, padding=1),
                nn.ReLU(inplace=True),
                nn.Conv2d(256, 256, kernel_size=3, padding=1),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(kernel_size=3, stride=2),
            )
            self.avgpool = nn.AdaptiveAvgPool2d((6, 6))
            self.classifier = nn.Sequential(
                nn.Dropout(p=dropout),
                nn.Linear(256 * 6 * 6, 4096),
                nn.ReLU(inplace=True),
                nn.Dropout(p=dropout),
                nn.Linear(4096, 4096),
                nn.ReLU(inplace=True),
                nn.Linear(4096, num_classes),
            )

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = self.features(x)
            x = self.avgpool(x)
            x = torch.flatten(x, 1)
            x = self.classifier(x)
            return x

    return AlexNet(num_classes, dropout)
