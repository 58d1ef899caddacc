"""A PyTorch mirror of StudioGAN's ResNet SAGAN (src/models/resnet.py and src/utils/ops.py of
PyTorch-StudioGAN, configured by src/configs/CIFAR10/SAGAN.yaml), written from reading them: the
same modules, forward order and state_dict names, so that its state_dicts are StudioGAN's and the
fixtures it produces test the engine's models/resnet.cpp against StudioGAN's computation.

    Generator(img_size, g_conv_dim, z_dim, num_classes, attn_loc, img_channels)
    Discriminator(img_size, d_conv_dim, num_classes, attn_loc, img_channels)

num_classes = 0 is the unconditional model (g_cond_mtd / d_cond_mtd "W/O"); otherwise cBN in G
and the projection discriminator (PD). Spectral norm: torch.nn.utils.spectral_norm with eps 1e-6
on every conv, linear and embedding. Batch norm eps 1e-4."""
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils import spectral_norm

SN_EPS = 1e-6
BN_EPS = 1e-4


def snconv2d(cin, cout, k, pad):
    return spectral_norm(nn.Conv2d(cin, cout, k, 1, pad, bias=True), eps=SN_EPS)


def snconv1x1(cin, cout):
    return spectral_norm(nn.Conv2d(cin, cout, 1, 1, 0, bias=False), eps=SN_EPS)


def snlinear(cin, cout, bias=True):
    return spectral_norm(nn.Linear(cin, cout, bias=bias), eps=SN_EPS)


def sn_embedding(n, dim):
    return spectral_norm(nn.Embedding(n, dim), eps=SN_EPS)


class ConditionalBatchNorm2d(nn.Module):
    def __init__(self, in_features, out_features):
        super().__init__()
        self.bn = nn.BatchNorm2d(out_features, eps=BN_EPS, momentum=0.1, affine=False)
        self.gain = snlinear(in_features, out_features, bias=False)
        self.bias = snlinear(in_features, out_features, bias=False)

    def forward(self, x, y):
        gain = (1 + self.gain(y)).view(y.size(0), -1, 1, 1)
        bias = self.bias(y).view(y.size(0), -1, 1, 1)
        return self.bn(x) * gain + bias


class SelfAttention(nn.Module):
    def __init__(self, ch):
        super().__init__()
        self.ch = ch
        self.conv1x1_theta = snconv1x1(ch, ch // 8)
        self.conv1x1_phi = snconv1x1(ch, ch // 8)
        self.conv1x1_g = snconv1x1(ch, ch // 2)
        self.conv1x1_attn = snconv1x1(ch // 2, ch)
        self.maxpool = nn.MaxPool2d(2, stride=2, padding=0)
        self.softmax = nn.Softmax(dim=-1)
        self.sigma = nn.Parameter(torch.zeros(1))

    def forward(self, x):
        _, ch, h, w = x.size()
        theta = self.conv1x1_theta(x).view(-1, ch // 8, h * w)
        phi = self.maxpool(self.conv1x1_phi(x)).view(-1, ch // 8, h * w // 4)
        attn = self.softmax(torch.bmm(theta.permute(0, 2, 1), phi))
        g = self.maxpool(self.conv1x1_g(x)).view(-1, ch // 2, h * w // 4)
        attn_g = torch.bmm(g, attn.permute(0, 2, 1)).view(-1, ch // 2, h, w)
        return x + self.sigma * self.conv1x1_attn(attn_g)


def norm(classes, ch):
    return ConditionalBatchNorm2d(classes, ch) if classes else nn.BatchNorm2d(ch, eps=BN_EPS)


class GenBlock(nn.Module):
    def __init__(self, cin, cout, classes):
        super().__init__()
        self.cond = classes > 0
        self.bn1 = norm(classes, cin)
        self.bn2 = norm(classes, cout)
        self.activation = nn.ReLU(inplace=True)
        self.conv2d0 = snconv2d(cin, cout, 1, 0)
        self.conv2d1 = snconv2d(cin, cout, 3, 1)
        self.conv2d2 = snconv2d(cout, cout, 3, 1)

    def forward(self, x, y):
        x0 = x
        x = self.bn1(x, y) if self.cond else self.bn1(x)
        x = self.activation(x)
        x = F.interpolate(x, scale_factor=2, mode="nearest")
        x = self.conv2d1(x)
        x = self.bn2(x, y) if self.cond else self.bn2(x)
        x = self.activation(x)
        x = self.conv2d2(x)
        x0 = F.interpolate(x0, scale_factor=2, mode="nearest")
        x0 = self.conv2d0(x0)
        return x + x0


G_IN = {32: [4, 4, 4], 64: [16, 8, 4, 2], 128: [16, 16, 8, 4, 2]}
G_OUT = {32: [4, 4, 4], 64: [8, 4, 2, 1], 128: [16, 8, 4, 2, 1]}


class Generator(nn.Module):
    def __init__(self, img_size, g_conv_dim, z_dim, num_classes, attn_loc=(2,), img_channels=3):
        super().__init__()
        self.num_classes = num_classes
        self.in_dims = [g_conv_dim * k for k in G_IN[img_size]]
        self.out_dims = [g_conv_dim * k for k in G_OUT[img_size]]
        self.bottom = 4
        self.linear0 = snlinear(z_dim, self.in_dims[0] * self.bottom * self.bottom)
        blocks = []
        for i in range(len(self.in_dims)):
            blocks.append(nn.ModuleList([GenBlock(self.in_dims[i], self.out_dims[i], num_classes)]))
            if i + 1 in attn_loc:
                blocks.append(nn.ModuleList([SelfAttention(self.out_dims[i])]))
        self.blocks = nn.ModuleList(blocks)
        self.bn4 = nn.BatchNorm2d(self.out_dims[-1], eps=BN_EPS)
        self.activation = nn.ReLU(inplace=True)
        self.conv2d5 = snconv2d(self.out_dims[-1], img_channels, 3, 1)
        self.tanh = nn.Tanh()

    def forward(self, z, label=None):
        y = F.one_hot(label, self.num_classes).to(z.dtype) if self.num_classes else None
        act = self.linear0(z).view(-1, self.in_dims[0], self.bottom, self.bottom)
        for block in self.blocks:
            for b in block:
                act = b(act) if isinstance(b, SelfAttention) else b(act, y)
        act = self.activation(self.bn4(act))
        return self.tanh(self.conv2d5(act))


class DiscOptBlock(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.conv2d0 = snconv2d(cin, cout, 1, 0)
        self.conv2d1 = snconv2d(cin, cout, 3, 1)
        self.conv2d2 = snconv2d(cout, cout, 3, 1)
        self.activation = nn.ReLU(inplace=True)
        self.average_pooling = nn.AvgPool2d(2)

    def forward(self, x):
        x0 = x
        x = self.conv2d1(x)
        x = self.activation(x)
        x = self.conv2d2(x)
        x = self.average_pooling(x)
        x0 = self.average_pooling(x0)
        x0 = self.conv2d0(x0)
        return x + x0


class DiscBlock(nn.Module):
    def __init__(self, cin, cout, downsample=True):
        super().__init__()
        self.downsample = downsample
        self.ch_mismatch = cin != cout
        if downsample or self.ch_mismatch:
            self.conv2d0 = snconv2d(cin, cout, 1, 0)
        self.conv2d1 = snconv2d(cin, cout, 3, 1)
        self.conv2d2 = snconv2d(cout, cout, 3, 1)
        self.activation = nn.ReLU(inplace=True)
        self.average_pooling = nn.AvgPool2d(2)

    def forward(self, x):
        # StudioGAN writes x0 = x, then x = activation(x) with an in-place ReLU: the shortcut
        # holds the same tensor and sees relu(x) too. Written out here.
        x = F.relu(x)
        x0 = x
        x = self.conv2d1(x)
        x = self.activation(x)
        x = self.conv2d2(x)
        if self.downsample:
            x = self.average_pooling(x)
        if self.downsample or self.ch_mismatch:
            x0 = self.conv2d0(x0)
            if self.downsample:
                x0 = self.average_pooling(x0)
        return x + x0


D_IN = {32: [None, 2, 2, 2], 64: [None, 1, 2, 4, 8], 128: [None, 1, 2, 4, 8, 16]}
D_OUT = {32: [2, 2, 2, 2], 64: [1, 2, 4, 8, 16], 128: [1, 2, 4, 8, 16, 16]}
D_DOWN = {32: [True, True, False, False], 64: [True] * 4 + [False], 128: [True] * 5 + [False]}


class Discriminator(nn.Module):
    def __init__(self, img_size, d_conv_dim, num_classes, attn_loc=(1,), img_channels=3):
        super().__init__()
        self.num_classes = num_classes
        in_dims = [img_channels] + [d_conv_dim * k for k in D_IN[img_size][1:]]
        out_dims = [d_conv_dim * k for k in D_OUT[img_size]]
        blocks = []
        for i in range(len(in_dims)):
            if i == 0:
                blocks.append(nn.ModuleList([DiscOptBlock(in_dims[i], out_dims[i])]))
            else:
                blocks.append(nn.ModuleList([DiscBlock(in_dims[i], out_dims[i],
                                                       D_DOWN[img_size][i])]))
            if i + 1 in attn_loc:
                blocks.append(nn.ModuleList([SelfAttention(out_dims[i])]))
        self.blocks = nn.ModuleList(blocks)
        self.activation = nn.ReLU(inplace=True)
        self.linear1 = snlinear(out_dims[-1], 1)
        if num_classes:
            self.embedding = sn_embedding(num_classes, out_dims[-1])

    def forward(self, x, label=None):
        h = x
        for block in self.blocks:
            for b in block:
                h = b(h)
        h = self.activation(h)
        h = torch.sum(h, dim=[2, 3])
        out = torch.squeeze(self.linear1(h), 1)
        if self.num_classes:
            out = out + torch.sum(torch.mul(self.embedding(label), h), 1)
        return out
