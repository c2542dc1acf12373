"""``runtel demo``: a small, real training loop logged to the local store.

Softmax regression on a synthetic 3-class problem in plain numpy (no extra installs),
3 epochs of mini-batch SGD, with a validation phase per epoch.
"""

from __future__ import annotations

import numpy as np

import runtel
from runtel.run import Run


def make_data(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    centers = np.array([[2.0, 0.0], [-1.0, 1.7], [-1.0, -1.7]])
    labels = rng.integers(0, 3, size=n)
    features = centers[labels] + rng.normal(scale=0.9, size=(n, 2))
    return features, labels


def softmax_step(
    weights: np.ndarray, features: np.ndarray, labels: np.ndarray
) -> tuple[float, float, np.ndarray]:
    """Loss, accuracy and gradient of softmax regression on one batch."""
    inputs = np.hstack([features, np.ones((len(features), 1))])
    logits = inputs @ weights
    logits -= logits.max(axis=1, keepdims=True)
    probs = np.exp(logits)
    probs /= probs.sum(axis=1, keepdims=True)
    loss = float(-np.log(probs[np.arange(len(labels)), labels] + 1e-12).mean())
    accuracy = float((probs.argmax(axis=1) == labels).mean())
    probs[np.arange(len(labels)), labels] -= 1.0
    return loss, accuracy, inputs.T @ probs / len(labels)


def train(run: Run, epochs: int = 3, batch_size: int = 32, lr: float = 0.5, seed: int = 0) -> float:
    rng = np.random.default_rng(seed)
    train_x, train_y = make_data(rng, 2048)
    val_x, val_y = make_data(rng, 512)
    weights = np.zeros((3, 3))
    val_accuracy = 0.0
    for _epoch in run.epochs(epochs):
        order = rng.permutation(len(train_x))
        for start in range(0, len(order), batch_size):
            batch = order[start : start + batch_size]
            loss, accuracy, grad = softmax_step(weights, train_x[batch], train_y[batch])
            weights -= lr * grad
            run.log({"train/loss": loss, "train/acc": accuracy, "lr": lr})
        with run.span("validate"):
            val_loss, val_accuracy, _ = softmax_step(weights, val_x, val_y)
            run.log({"val/loss": val_loss, "val/acc": val_accuracy}, step=run.step)
    return val_accuracy


def main(base_dir: str | None = None, epochs: int = 3) -> runtel.StoredRun:
    lr, batch_size = 0.5, 32
    config = {"model": {"kind": "softmax-regression", "classes": 3}, "lr": lr, "batch_size": batch_size}
    with runtel.init(project="demo", name="softmax-demo", config=config, base_dir=base_dir) as run:
        val_accuracy = train(run, epochs=epochs, batch_size=batch_size, lr=lr)
    stored = runtel.Store(run.dir.parent).run(run.id)
    best, step = stored.best("val/acc", mode="max")
    print(f"runtel demo: {epochs} epochs, final val/acc {val_accuracy:.3f} (best {best:.3f} at step {step})")
    print(f"run {run.name} ({run.id}) stored in {run.dir}")
    print("read it back:")
    print("  import runtel")
    print(f"  r = runtel.Store({str(run.dir.parent)!r}).run({run.id[:8]!r})")
    print('  steps, times, values = r.history("train/loss")')
    print('  r.best("val/acc", mode="max")')
    return stored
