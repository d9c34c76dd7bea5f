"""LoRA fine-tuning through ``peft``: inject adapters into the DiT, freeze the rest, merge them back for export.

Only the LoRA matrices train (the base weights are frozen); :func:`merge_lora` folds W + (alpha/r)·B·A into each
base layer and removes the adapters, giving a plain model whose state dict has the official key names again (so
it saves as an ordinary model folder). :func:`lora_state_dict` returns the adapter weights alone.
"""

from __future__ import annotations

import torch.nn as nn

from ..errors import ConfigError


def add_lora(model: nn.Module, cfg) -> nn.Module:
    """Inject LoRA layers (rank ``cfg.rank``, ``cfg.alpha``, ``cfg.dropout``) into ``cfg.target_modules`` (module
    names or suffixes such as ``q``, ``ffn.0``) and freeze every non-LoRA parameter. Returns ``model``."""
    from peft import LoraConfig, inject_adapter_in_model

    names = [n for n, _ in model.named_modules()]
    for t in cfg.target_modules:
        if not any(n == t or n.endswith("." + t) for n in names):
            raise ConfigError(f"lora.target_modules: no module named {t!r} in the model (e.g. q, k, v, o, ffn.0, ffn.2)")
    config = LoraConfig(r=int(cfg.rank), lora_alpha=float(cfg.alpha), lora_dropout=float(cfg.dropout),
                        target_modules=list(cfg.target_modules), bias="none")
    inject_adapter_in_model(config, model)
    for n, p in model.named_parameters():
        p.requires_grad_("lora_" in n)
    return model


def has_lora(model: nn.Module) -> bool:
    from peft.tuners.lora import LoraLayer

    return any(isinstance(m, LoraLayer) for m in model.modules())


def merge_lora(model: nn.Module) -> nn.Module:
    """Fold every adapter into its base layer and replace the LoRA wrapper by the (now merged) base layer."""
    from peft.tuners.lora import LoraLayer

    for name, module in list(model.named_modules()):
        if isinstance(module, LoraLayer):
            module.merge()
            parent_name, _, child = name.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            setattr(parent, child, module.get_base_layer())
    for p in model.parameters():
        p.requires_grad_(True)
    return model


def lora_state_dict(model: nn.Module) -> dict:
    return {k: v for k, v in model.state_dict().items() if "lora_" in k}
