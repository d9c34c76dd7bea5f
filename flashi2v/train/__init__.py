"""Training: typed config, the trainer (FSDP2 + Ulysses CP), DCP checkpoints, EMA, adaptive clipping, LoRA, export."""

from .config import TrainConfig

__all__ = ["TrainConfig", "train", "Trainer"]


def __getattr__(name):  # keep `import flashi2v.train` light
    if name in ("train", "Trainer"):
        from . import trainer

        return getattr(trainer, name)
    raise AttributeError(name)
