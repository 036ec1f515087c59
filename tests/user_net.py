"""A user's own model source, known to no snacs registry, shared by the tests that write it
to a file and load it with --model-file (tests/test_cli.py, tests/test_io_process.py)."""

USER_NET = '''
import torch
from torch import nn


class UserNet(nn.Module):
    """A user's own residual CNN, known to no snacs registry."""

    def __init__(self, num_classes=10, width=8):
        super().__init__()
        self.stem = nn.Conv2d(3, width, 3, padding=1, bias=False)
        self.bn0 = nn.BatchNorm2d(width)
        self.a = nn.Conv2d(width, 2 * width, 3, padding=1, bias=False)
        self.bna = nn.BatchNorm2d(2 * width)
        self.b = nn.Conv2d(2 * width, width, 3, padding=1, bias=False)
        self.bnb = nn.BatchNorm2d(width)
        self.fc = nn.Linear(width, num_classes)

    def forward(self, x):
        x = torch.relu(self.bn0(self.stem(x)))
        y = torch.relu(self.bna(self.a(x)))
        x = torch.relu(x + self.bnb(self.b(y)))
        return self.fc(x.mean((2, 3)))


class NeedsGPU(UserNet):
    def __init__(self, **kw):
        raise RuntimeError("no GPU found")
'''
