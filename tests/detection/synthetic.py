"""Synthetic detection data and a tiny YOLO-style detector (anchor-free, v8-style head).

Photos are 96 x 128 noise with one or two filled rectangles (class 0) or discs (class 1);
the model sees them letterboxed to 64 x 64 by the runtime's own `letterbox` step. The
detector: four 3x3 convs (strides 2, 2, 2, 1) to an 8 x 8 grid, a 1x1 head with 4 + C
channels decoded in the graph as Ultralytics exports do: cx = (grid_x + sigmoid) / 8,
cy likewise, w = sigmoid, h = sigmoid (all normalized to the input), class scores sigmoid;
output [1, 4 + C, 64]. Boxes are normalized so boxes and scores share one int8 range.
"""
from __future__ import annotations

import numpy as np

LABELS = ["rectangle", "disc"]
PHOTO = (96, 128)
INPUT = 64
GRID = 8
PREPROCESS = [{"op": "letterbox", "size": [INPUT, INPUT], "value": 114},
              {"op": "scale", "factor": 1.0 / 255.0}]
DECODE = [{"op": "yolo", "version": "v8", "coordinates": "normalized", "score_threshold": 0.3},
          {"op": "nms", "iou": 0.45, "max_detections": 10}]


def make_photo(rng: np.random.Generator):
    """(photo uint8 (96, 128, 3), boxes [[x0, y0, x1, y1]], classes)."""
    h, w = PHOTO
    image = rng.integers(0, 110, (h, w, 3), dtype=np.uint8)
    boxes, classes = [], []
    for _ in range(int(rng.integers(1, 3))):
        for _attempt in range(20):
            bw, bh = rng.integers(24, 44, 2)
            x0, y0 = int(rng.integers(0, w - bw)), int(rng.integers(0, h - bh))
            box = [x0, y0, x0 + int(bw), y0 + int(bh)]
            if all(box[0] >= b[2] + 4 or box[2] + 4 <= b[0] or box[1] >= b[3] + 4 or
                   box[3] + 4 <= b[1] for b in boxes):
                break
        else:
            continue
        cls = int(rng.integers(0, 2))
        color = rng.integers(150, 256, 3).astype(np.uint8)
        x0, y0, x1, y1 = box
        if cls == 0:
            image[y0:y1, x0:x1] = color
        else:
            yy, xx = np.mgrid[y0:y1, x0:x1]
            cx, cy, rx, ry = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 2, (y1 - y0) / 2
            inside = ((xx + 0.5 - cx) / rx) ** 2 + ((yy + 0.5 - cy) / ry) ** 2 <= 1.0
            image[y0:y1, x0:x1][inside] = color
        boxes.append([float(v) for v in box])
        classes.append(cls)
    return image, boxes, classes


def dataset(count: int, seed: int):
    """Photos, their letterboxed model inputs (N, 64, 64, 3) float32, and targets in
    normalized model coordinates: list of (boxes (k, 4) xyxy, classes)."""
    from edgepack.runtime.ops.image import letterbox_image
    rng = np.random.default_rng(seed)
    photos, inputs, targets = [], [], []
    for _ in range(count):
        photo, boxes, classes = make_photo(rng)
        boxed, geometry = letterbox_image(photo, (INPUT, INPUT), 114)
        photos.append((photo, boxes, classes))
        inputs.append(boxed.astype(np.float32) / 255.0)
        targets.append((geometry.boxes_to_model(np.array(boxes)) / INPUT, np.array(classes)))
    return photos, np.stack(inputs), targets


def torch_detector(classes: int = 2, seed: int = 0):
    import torch
    from torch import nn
    torch.manual_seed(seed)

    class TinyDetector(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(
                nn.Conv2d(3, 12, 3, 2, 1), nn.ReLU(), nn.Conv2d(12, 24, 3, 2, 1), nn.ReLU(),
                nn.Conv2d(24, 32, 3, 2, 1), nn.ReLU(), nn.Conv2d(32, 32, 3, 1, 1), nn.ReLU())
            self.head = nn.Conv2d(32, 4 + classes, 1)
            gy, gx = torch.meshgrid(torch.arange(GRID), torch.arange(GRID), indexing="ij")
            self.register_buffer("grid", torch.stack([gx, gy]).float()[None])  # (1, 2, 8, 8)

        def raw(self, x):
            return self.head(self.body(x))

        def forward(self, x):
            h = self.raw(x)
            xy = (self.grid + torch.sigmoid(h[:, 0:2])) / GRID
            rest = torch.sigmoid(h[:, 2:])
            return torch.cat([xy, rest], 1).flatten(2)      # (B, 4 + C, 64)
    return TinyDetector()


def train(model, inputs: np.ndarray, targets, steps: int = 500, seed: int = 0, batch: int = 32):
    """Assign each object to the grid cell holding its centre; BCE on class logits, L1 on
    the decoded box at that cell."""
    import torch
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    x_all = torch.from_numpy(inputs.transpose(0, 3, 1, 2).copy())
    n = len(inputs)
    cls_target = np.zeros((n, 2, GRID, GRID), np.float32)
    box_target = np.zeros((n, 4, GRID, GRID), np.float32)
    mask = np.zeros((n, 1, GRID, GRID), np.float32)
    for i, (boxes, classes) in enumerate(targets):
        for box, c in zip(boxes, classes):
            cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
            gx, gy = min(int(cx * GRID), GRID - 1), min(int(cy * GRID), GRID - 1)
            cls_target[i, c, gy, gx] = 1.0
            box_target[i, :, gy, gx] = [cx, cy, box[2] - box[0], box[3] - box[1]]
            mask[i, 0, gy, gx] = 1.0
    cls_t, box_t, mask_t = (torch.from_numpy(a) for a in (cls_target, box_target, mask))
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    # positives are 1-2 cells of 128: weigh them up so scores clear the threshold
    bce = torch.nn.BCEWithLogitsLoss(pos_weight=torch.tensor(8.0))
    model.train()
    for step in range(steps):
        idx = torch.from_numpy(rng.integers(0, n, batch))
        h = model.raw(x_all[idx])
        xy = (model.grid + torch.sigmoid(h[:, 0:2])) / GRID
        wh = torch.sigmoid(h[:, 2:4])
        box = torch.cat([xy, wh], 1)
        m = mask_t[idx]
        box_loss = (torch.abs(box - box_t[idx]) * m).sum() / m.sum().clamp(min=1)
        loss = bce(h[:, 4:], cls_t[idx]) + box_loss * 10
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step == steps * 3 // 4:
            for group in optimizer.param_groups:
                group["lr"] = 1e-3
    model.eval()
    return model


def keras_twin(torch_model):
    """The same network in Keras (NHWC), weights copied from the trained PyTorch model."""
    import keras
    from keras import layers, ops

    class Decode(layers.Layer):
        def call(self, h):
            gy, gx = np.meshgrid(np.arange(GRID), np.arange(GRID), indexing="ij")
            grid = np.stack([gx, gy], -1).astype(np.float32)[None]        # (1, 8, 8, 2)
            xy = (grid + ops.sigmoid(h[..., 0:2])) / GRID
            out = ops.concatenate([xy, ops.sigmoid(h[..., 2:])], -1)      # (B, 8, 8, 4 + C)
            out = ops.reshape(out, (-1, GRID * GRID, h.shape[-1]))
            return ops.transpose(out, (0, 2, 1))

    x = keras.Input((INPUT, INPUT, 3), name="image", batch_size=1)
    convs = [m for m in torch_model.body if m.__class__.__name__ == "Conv2d"]
    y = x
    built = []
    for conv in convs:
        stride = conv.stride[0]
        if stride == 2:   # PyTorch pads 1 on every side; Keras 'same' pads bottom/right only
            y = layers.ZeroPadding2D(1)(y)
        layer = layers.Conv2D(conv.out_channels, 3, stride, "valid" if stride == 2 else "same",
                              activation="relu")
        y = layer(y)
        built.append((layer, conv))
    head = layers.Conv2D(torch_model.head.out_channels, 1)
    y = Decode()(head(y))
    built.append((head, torch_model.head))
    model = keras.Model(x, y)
    for layer, conv in built:
        w = conv.weight.detach().numpy().transpose(2, 3, 1, 0)
        layer.set_weights([w, conv.bias.detach().numpy()])
    return model


def found_all(detections, boxes, classes, iou: float = 0.5) -> bool:
    """Every drawn shape has a detection of its class with IoU >= iou."""
    from edgepack.runtime.ops.vision.nms import iou_matrix
    if not detections:
        return not boxes
    got = np.array([d["box"] for d in detections])
    overlap = iou_matrix(np.array(boxes), got)
    for i, c in enumerate(classes):
        ok = [overlap[i, j] >= iou and d["class"] == c for j, d in enumerate(detections)]
        if not any(ok):
            return False
    return True
