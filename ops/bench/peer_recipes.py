# The torchvision + PIL side of `mimflow bench data` for the recipes peer_data.py does not cover, and the decode-only
# reference. Same DataLoader set-up as ../shared/peers/peer_data.py (batch 64, shuffle, first batch untimed), same
# folder of images (an ImageFolder root, or an ADEChallengeData2016 root for `segmentation`).
#   python3 peer_recipes.py DIR N WORKERS RECIPE
# RECIPE: decode            PIL Image.open(f).load() over the first N files, one process (the decode limit)
#         pretrain          BEiT pretraining (peer_data.py's transform)
#         pretrain-two-view BEiT v1: jitter, flip, one RandomResizedCrop drawn, 224 bicubic (normalised) + 112 lanczos ([0, 1])
#         finetune          RandomResizedCrop 224 bicubic, flip, torchvision RandAugment(2, 9), normalise, RandomErasing 0.25
#                           (timm is not in Debian 12: torchvision's RandAugment applies the same kinds of PIL ops)
#         multi-crop        DINO/iBOT: 2 global 224 (0.32-1) + 10 local 96 (0.05-0.32), flip, jitter 0.8, grey 0.2,
#                           blur 1.0/0.1/0.5 (PIL GaussianBlur radius 0.1-2), solarize 0.2 on the second global crop
#         segmentation      mmseg's ADE20K train pipeline on PIL/numpy/OpenCV as mmcv does it: keep-ratio resize to
#                           (2048, 512)·r, r in [0.5, 2] (cv2 bilinear / nearest), random crop 512 with cat_max_ratio 0.75,
#                           flip, PhotoMetricDistortion (cv2 HSV), normalise, pad 512 (needs python3-opencv)
# Prints "torchvision+PIL workers W: X img/s" (decode: "PIL decode: X img/s").
import os, sys, time, random, math
import numpy as np
from PIL import Image, ImageFilter, ImageOps

root, n, workers, recipe = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def image_files(folder):
    out = []
    for d, _, fs in sorted(os.walk(folder)):
        out += [os.path.join(d, f) for f in sorted(fs) if f.lower().endswith((".jpg", ".jpeg", ".png"))]
    return out


if recipe == "decode":
    files = image_files(root)[:n]
    data = [open(f, "rb").read() for f in files]
    import io
    for b in data[:20]:
        Image.open(io.BytesIO(b)).load()
    t = time.time()
    for b in data:
        Image.open(io.BytesIO(b)).load()
    dt = time.time() - t
    print(f"PIL decode: {len(data) / dt:8.1f} img/s  ({len(data)} files, {dt / len(data) * 1e3:.3f} ms per image)", flush=True)
    sys.exit(0)

import torch
from torchvision import transforms as T, datasets
import torchvision.transforms.functional as F

normalize = T.Compose([T.ToTensor(), T.Normalize(MEAN, STD)])


class TwoView:
    """BEiT v1's RandomResizedCropAndInterpolationWithTwoPic after jitter and flip."""
    def __init__(self):
        self.common = T.Compose([T.ColorJitter(0.4, 0.4, 0.4), T.RandomHorizontalFlip()])
        self.crop = T.RandomResizedCrop(224, scale=(0.08, 1.0))

    def __call__(self, img):
        img = self.common(img)
        i, j, h, w = self.crop.get_params(img, self.crop.scale, self.crop.ratio)
        first = F.resized_crop(img, i, j, h, w, [224, 224], T.InterpolationMode.BICUBIC)
        second = F.resized_crop(img, i, j, h, w, [112, 112], T.InterpolationMode.LANCZOS)
        return normalize(first), F.to_tensor(second)


class Blur:
    def __init__(self, p):
        self.p = p

    def __call__(self, img):
        return img.filter(ImageFilter.GaussianBlur(radius=random.uniform(0.1, 2.0))) if random.random() <= self.p else img


class Solarize:
    def __init__(self, p):
        self.p = p

    def __call__(self, img):
        return ImageOps.solarize(img) if random.random() < self.p else img


class MultiCrop:
    """DINO's DataAugmentationDINO with MimFlow's scales (global 0.32-1, local 0.05-0.32)."""
    def __init__(self):
        jitter = T.Compose([T.RandomHorizontalFlip(), T.RandomApply([T.ColorJitter(0.4, 0.4, 0.2, 0.1)], p=0.8), T.RandomGrayscale(p=0.2)])
        bic = T.InterpolationMode.BICUBIC
        self.g1 = T.Compose([T.RandomResizedCrop(224, scale=(0.32, 1.0), interpolation=bic), jitter, Blur(1.0), normalize])
        self.g2 = T.Compose([T.RandomResizedCrop(224, scale=(0.32, 1.0), interpolation=bic), jitter, Blur(0.1), Solarize(0.2), normalize])
        self.local = T.Compose([T.RandomResizedCrop(96, scale=(0.05, 0.32), interpolation=bic), jitter, Blur(0.5), normalize])

    def __call__(self, img):
        return [self.g1(img), self.g2(img)] + [self.local(img) for _ in range(10)]


def finetune_transform():
    return T.Compose([T.RandomResizedCrop(224, scale=(0.08, 1.0), interpolation=T.InterpolationMode.BICUBIC), T.RandomHorizontalFlip(),
                      T.RandAugment(num_ops=2, magnitude=9, interpolation=T.InterpolationMode.BICUBIC, fill=[124, 116, 104]),
                      normalize, T.RandomErasing(p=0.25, value="random")])


class Ade20k(torch.utils.data.Dataset):
    """mmseg's ADE20K training pipeline (LoadImage, LoadAnnotations reduce_zero_label, Resize ratio_range, RandomCrop
    cat_max_ratio, RandomFlip, PhotoMetricDistortion, Normalize, Pad) with the OpenCV calls mmcv makes."""
    def __init__(self, folder):
        import cv2
        self.cv2 = cv2
        cv2.setNumThreads(0)
        images = os.path.join(folder, "ADEChallengeData2016", "images", "training")
        labels = os.path.join(folder, "ADEChallengeData2016", "annotations", "training")
        self.items = [(os.path.join(images, f), os.path.join(labels, os.path.splitext(f)[0] + ".png")) for f in sorted(os.listdir(images))]

    def __len__(self):
        return len(self.items)

    def __getitem__(self, index):
        cv2 = self.cv2
        img = cv2.imread(self.items[index][0], cv2.IMREAD_COLOR)[:, :, ::-1]
        seg = np.array(Image.open(self.items[index][1]))
        seg = seg.astype(np.int32) - 1
        seg[seg == -1] = 255
        seg = seg.astype(np.uint8)
        r = random.uniform(0.5, 2.0)
        h, w = img.shape[:2]
        scale = min(2048 * r / max(h, w), 512 * r / min(h, w))
        size = (int(w * scale + 0.5), int(h * scale + 0.5))
        img = cv2.resize(np.ascontiguousarray(img), size, interpolation=cv2.INTER_LINEAR)
        seg = cv2.resize(seg, size, interpolation=cv2.INTER_NEAREST)
        for _ in range(10):
            top = random.randint(0, max(img.shape[0] - 512, 0))
            left = random.randint(0, max(img.shape[1] - 512, 0))
            crop = seg[top:top + 512, left:left + 512]
            labels, counts = np.unique(crop, return_counts=True)
            counts = counts[labels != 255]
            if len(counts) > 1 and counts.max() / counts.sum() < 0.75:
                break
        img = img[top:top + 512, left:left + 512]
        seg = seg[top:top + 512, left:left + 512]
        if random.random() < 0.5:
            img, seg = img[:, ::-1], seg[:, ::-1]
        img = img.astype(np.float32)
        if random.randint(0, 1):
            img = np.clip(img + random.uniform(-32, 32), 0, 255)
        mode = random.randint(0, 1)
        if mode == 1 and random.randint(0, 1):
            img = np.clip(img * random.uniform(0.5, 1.5), 0, 255)
        if random.randint(0, 1) or random.randint(0, 1):
            hsv = cv2.cvtColor(img.astype(np.uint8)[:, :, ::-1], cv2.COLOR_BGR2HSV)
            if random.randint(0, 1):
                hsv[..., 1] = np.clip(hsv[..., 1] * random.uniform(0.5, 1.5), 0, 255)
            if random.randint(0, 1):
                hsv[..., 0] = (hsv[..., 0].astype(int) + random.randint(-18, 18)) % 180
            img = cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[:, :, ::-1].astype(np.float32)
        if mode == 0 and random.randint(0, 1):
            img = np.clip(img * random.uniform(0.5, 1.5), 0, 255)
        img = (img - np.array(MEAN, np.float32) * 255) / (np.array(STD, np.float32) * 255)
        out = np.zeros((512, 512, 3), np.float32)
        out[:img.shape[0], :img.shape[1]] = img
        labels = np.full((512, 512), 255, np.uint8)
        labels[:seg.shape[0], :seg.shape[1]] = seg
        return torch.from_numpy(out.transpose(2, 0, 1).copy()), torch.from_numpy(labels)


if recipe == "segmentation":
    ds = Ade20k(root)
else:
    tf = {"pretrain": T.Compose([T.ColorJitter(0.4, 0.4, 0.4), T.RandomHorizontalFlip(),
                                 T.RandomResizedCrop(224, scale=(0.08, 1.0), interpolation=T.InterpolationMode.BICUBIC), normalize]),
          "pretrain-two-view": TwoView(), "finetune": finetune_transform(), "multi-crop": MultiCrop()}[recipe]
    ds = datasets.ImageFolder(root, transform=tf)
ds = torch.utils.data.Subset(ds, list(range(min(n, len(ds)))))
dl = torch.utils.data.DataLoader(ds, batch_size=64, num_workers=workers, shuffle=True, persistent_workers=False, pin_memory=True, drop_last=True)
it = iter(dl); next(it); t = time.time(); k = 0
for batch in it:
    k += batch[0].shape[0] if not isinstance(batch[0], list) else batch[0][0].shape[0]
dt = time.time() - t
print(f"torchvision+PIL {recipe} workers {workers:2d}: {k / dt:8.1f} img/s  ({k / dt / max(workers, 1):6.1f} per worker)", flush=True)
