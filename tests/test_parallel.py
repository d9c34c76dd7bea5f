"""The parallel layer: config/mesh, Ulysses context parallelism, FSDP2 precision groups and gradient rule,
activation checkpointing and full state dicts. Multi-process checks run on gloo via tests/dist.py; each spawned run
groups several checks to keep process start-ups few. The references are computed in the child processes themselves
(same seeds, same thread count), so nothing large crosses process boundaries."""

from __future__ import annotations

import copy
import time

import pytest
import torch
import torch.distributed as dist

from conftest import randomize_, small_config
from dist import run_distributed
from flashi2v import ConfigError
from flashi2v.method import training_loss
from flashi2v.models import build_transformer
from flashi2v.parallel import ParallelConfig, build_mesh, dp_rank, dp_size, full_state_dict, load_full_state_dict, parallelize

# FSDP notes that the grouped linears return views; the model never modifies them in place (docs/parallel.md).
pytestmark = pytest.mark.filterwarnings("ignore:FSDP2-wrapped module")

TOL = 1e-5
ODD = (3, 6, 10)  # latent (T, h, w): 3 * 3 * 5 = 45 tokens, not divisible by 2 or 4 -> padding
EVEN = (2, 8, 8)  # 2 * 4 * 4 = 32 tokens


# ------------------------------------------------------------------------------------------------------ helpers
def _model(seed: int = 0, **cfg) -> torch.nn.Module:
    """A small model with every parameter random (so the zero-initialised FlashI2V branches matter)."""
    torch.manual_seed(seed)
    return randomize_(build_transformer(small_config(**cfg)), seed)


def _batch(model, n: int, shape: tuple[int, int, int], seed: int = 1) -> dict:
    c = model.config
    g = torch.Generator().manual_seed(seed)
    t, h, w = shape
    return dict(
        latents=torch.randn(n, c.in_dim, t, h, w, generator=g),
        context=torch.randn(n, 5, c.text_dim, generator=g),
        sigmas=torch.rand(n, generator=g) * 0.8 + 0.1,
        noise=torch.randn(n, c.in_dim, t, h, w, generator=g),
        target=torch.randn(n, c.out_dim, t, h, w, generator=g),
    )


def _loss(model, batch: dict, rows=slice(None)) -> tuple[torch.Tensor, torch.Tensor]:
    """(loss, prediction) on ``rows`` of the batch: the FlashI2V training loss (φ + Fourier branch), or for T2V a
    plain regression of the velocity onto a random target (out_dim may differ from in_dim)."""
    b = {k: v[rows] for k, v in batch.items()}
    if model.config.is_flashi2v:
        out = training_loss(model, b["latents"], b["latents"][:, :, :1], b["context"], sigmas=b["sigmas"],
                            noise=b["noise"], cutoff_ratio=0.3)
        return out.loss, out.prediction
    pred = model(b["latents"], b["sigmas"] * 1000, b["context"])
    return (pred - b["target"]).square().mean(), pred


def _grads(model) -> dict[str, torch.Tensor]:
    """Full gradients by name (gathering FSDP's sharded DTensor gradients: collective)."""
    out = {}
    for name, p in model.named_parameters():
        g = p.grad
        out[name] = (g.full_tensor() if hasattr(g, "full_tensor") else g).detach().clone()
    return out


def _reference(model, batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    model = copy.deepcopy(model)
    loss, pred = _loss(model, batch)
    loss.backward()
    return pred.detach(), _grads(model)


def _assert_close(actual: dict | torch.Tensor, expected: dict | torch.Tensor, what: str, tol: float = TOL):
    if isinstance(expected, torch.Tensor):
        actual, expected = {"": actual}, {"": expected}
    assert list(actual) == list(expected), what
    for k in expected:
        diff = (actual[k].float() - expected[k].float()).abs().max().item()
        assert diff <= tol, f"{what} {k}: max |diff| {diff:.3g} > {tol}"


# ------------------------------------------------------------------------------------------- single process
def test_parallel_config_validation():
    assert ParallelConfig(cp=2).resolved(8).dp_shard == 4
    assert ParallelConfig(dp_replicate=2, dp_shard=2, cp=2).resolved(8).dp_shard == 2
    with pytest.raises(ConfigError, match="2 x dp_shard 3 x cp 1 = 6 != world size 4"):
        ParallelConfig(dp_replicate=2, dp_shard=3).resolved(4)
    with pytest.raises(ConfigError, match="not divisible by dp_replicate 1 x cp 3"):
        ParallelConfig(cp=3).resolved(4)
    with pytest.raises(ConfigError, match="param_dtype"):
        ParallelConfig(param_dtype="fp8")
    with pytest.raises(ConfigError, match="dp_shard"):
        ParallelConfig(dp_shard=0)
    with pytest.raises(ConfigError, match="unknown parallel options"):
        ParallelConfig.from_dict({"cp": 2, "tp": 2})
    with pytest.raises(ConfigError, match="needs a device mesh"):
        parallelize(_model(), None, ParallelConfig(param_dtype="bf16"))


def test_activation_checkpointing_same_gradients_and_keys():
    ref = _model()
    batch = _batch(ref, 2, ODD)
    _, expected = _reference(ref, batch)
    model = parallelize(copy.deepcopy(ref), None, ParallelConfig(param_dtype="fp32", activation_checkpointing=True))
    assert model.gradient_checkpointing and list(model.state_dict()) == list(ref.state_dict())
    _loss(model, batch)[0].backward()
    got = _grads(model)
    assert all(torch.equal(got[k], expected[k]) for k in expected)


def test_single_process_mesh_runs_the_same_bf16_policy(monkeypatch):
    """Not launched by torchrun: init_distributed is a no-op and build_mesh makes a one-rank group, so FSDP's mixed
    precision (fp32 master weights, bf16 matmuls) is available on a single device too."""
    from flashi2v.parallel import DistInfo, cp_group, init_distributed, mesh_shape
    from flashi2v.precision import apply_precision

    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)
    if dist.is_initialized():
        pytest.skip("a process group already exists in this process")
    assert init_distributed() == DistInfo(0, 1, 0, torch.device("cuda" if torch.cuda.is_available() else "cpu"))
    ref = _model()
    batch = _batch(ref, 1, EVEN)
    try:
        mesh = build_mesh(ParallelConfig(), 1, "cpu")
        assert mesh_shape(mesh) == {"dp_replicate": 1, "dp_shard": 1, "cp": 1} and cp_group(mesh) is None
        assert (dp_rank(mesh), dp_size(mesh)) == (0, 1)
        model = parallelize(copy.deepcopy(ref), mesh, ParallelConfig())
        loss, out = _loss(model, batch)
        loss.backward()
        assert out.dtype == torch.float32 and all(p.dtype == p.grad.dtype == torch.float32 for p in model.parameters())
        with torch.no_grad():
            expected = _loss(apply_precision(copy.deepcopy(ref), torch.bfloat16), batch)[1]
        assert ((out.detach() - expected).norm() / expected.norm()).item() < 1e-3
        assert list(full_state_dict(model)) == list(ref.state_dict())
    finally:
        dist.destroy_process_group()


def test_attention_casts_k_v_inputs_like_q_for_grouped_fsdp_units():
    """parallelize() makes {q, k, v, o} one FSDP2 unit with bf16 compute. Before torch 2.13 FSDP2 cast the inputs of
    only the unit's first module (q) to bf16; on torch 2.11 (an H100) the bf16 recipe then failed with "mat1 and
    mat2 must have the same dtype". Emulated here with a cast on q alone: the attention gives exactly what it gives
    on inputs already in bf16."""
    from flashi2v.models.wan import CrossAttention, SelfAttention

    def cast_q_only(module):
        module.q.register_forward_pre_hook(lambda _, args: tuple(a.to(torch.bfloat16) for a in args))
        return module

    torch.manual_seed(0)
    x, context, grid = torch.randn(2, 8, 32), torch.randn(2, 5, 32), (2, 2, 2)
    self_attn = SelfAttention(32, 2).to(torch.bfloat16)
    out = cast_q_only(copy.deepcopy(self_attn))(x, grid)
    assert out.dtype == torch.bfloat16
    assert torch.equal(out, self_attn(x.to(torch.bfloat16), grid))
    cross = CrossAttention(32, 2).to(torch.bfloat16)
    out = cast_q_only(copy.deepcopy(cross))(x, context)
    assert torch.equal(out, cross(x.to(torch.bfloat16), context.to(torch.bfloat16)))


def _fails_on_rank_1(rank, world_size):
    if rank == 1:
        raise ConfigError("bad option on rank 1")
    dist.barrier()  # rank 0 would wait forever: the helper must end it
    return rank


def test_dist_helper_raises_the_childs_error():
    with pytest.raises(ConfigError, match="bad option on rank 1") as info:
        run_distributed(_fails_on_rank_1, 2, timeout_s=60)
    assert "raised in rank 1 of 2" in str(info.value.__notes__)


def _cause_outlived_by_echo(rank, world_size):
    import threading

    if rank == 1:  # fails first, but its process lingers (a non-daemon thread), so rank 0 ends before it
        threading.Thread(target=time.sleep, args=(1.0,)).start()
        raise ConfigError("the cause, on rank 1")
    time.sleep(0.3)
    raise RuntimeError("the echo, on rank 0")


def test_dist_helper_raises_the_first_error_not_its_echo():
    # The CI flake this pins: rank 1 raised, rank 0's barrier then failed with gloo's "connection closed by peer",
    # and the helper reported rank 0's echo because it happened to see that process end first.
    with pytest.raises(ConfigError, match="the cause, on rank 1") as info:
        run_distributed(_cause_outlived_by_echo, 2, timeout_s=60)
    assert "raised in rank 1 of 2" in str(info.value.__notes__)


# --------------------------------------------------------------------------------- context parallel, 2 ranks
def _cp_checks(rank, world_size):
    group = dist.group.WORLD
    cases = [
        ("flashi2v, 45 tokens", dict(), ODD),
        ("flashi2v, 32 tokens", dict(), EVEN),
        ("t2v, in_dim 16 -> out_dim 8", dict(model_type="t2v", out_dim=8), ODD),
    ]
    for name, cfg, shape in cases:
        ref = _model(**cfg)
        batch = _batch(ref, 2, shape)
        out_ref, grads_ref = _reference(ref, batch)

        # The raw model hook + the documented rule: every CP rank gets the same inputs and the full output; the
        # parameter gradients are each rank's token share and SUM to the single-process gradients.
        model = copy.deepcopy(ref)
        model.enable_context_parallel(group)
        loss, out = _loss(model, batch)
        _assert_close(out, out_ref, f"{name}: CP output")
        loss.backward()
        local = _grads(model)
        summed = {k: g.clone() for k, g in local.items()}
        for g in summed.values():
            dist.all_reduce(g)
        _assert_close(summed, grads_ref, f"{name}: CP gradients summed over the group")

        # Activation checkpointing under CP: identical gradients.
        model.zero_grad(set_to_none=True)
        model.gradient_checkpointing = True
        _loss(model, batch)[0].backward()
        assert all(torch.equal(model.get_parameter(k).grad, local[k]) for k in local), f"{name}: checkpointing"

    # parallelize over a (1, 1, 2) mesh: FSDP over the CP ranks applies the rule itself (divide factor 1).
    ref = _model()
    batch = _batch(ref, 2, ODD)
    out_ref, grads_ref = _reference(ref, batch)
    cfg = ParallelConfig(cp=2, param_dtype="fp32", activation_checkpointing=True)
    model = parallelize(copy.deepcopy(ref), build_mesh(cfg, world_size, "cpu"), cfg)
    loss, out = _loss(model, batch)
    loss.backward()
    _assert_close(out, out_ref, "parallelize cp=2: output")
    _assert_close(_grads(model), grads_ref, "parallelize cp=2: gradients")

    # Heads must divide into the CP ranks.
    with pytest.raises(ConfigError, match="num_heads 3 is not divisible by the context-parallel size 2"):
        _model(dim=48, num_heads=3).enable_context_parallel(group)
    return rank


def test_context_parallel_2_ranks_matches_single_process():
    assert run_distributed(_cp_checks, 2) == [0, 1]


# ------------------------------------------------------------------------------------------------ FSDP, 2 ranks
def _fsdp_checks(rank, world_size):
    # Adam divides by sqrt(v): with its default eps 1e-8 a gradient of 1e-8 (there are some) turns a harmless 2e-8
    # summation-order difference into a 1e-4 step difference, so use a larger eps to compare parameters at 1e-5.
    steps, adamw = 3, dict(lr=1e-3, eps=1e-5, weight_decay=0.1)
    ref = _model()
    initial = copy.deepcopy(ref.state_dict())
    batches = [_batch(ref, 2, EVEN, seed=10 + s) for s in range(steps)]

    # Single-process reference: AdamW on the global batch of 2.
    single = copy.deepcopy(ref)
    opt = torch.optim.AdamW(single.parameters(), **adamw)
    for b in batches:
        opt.zero_grad()
        _loss(single, b)[0].backward()
        opt.step()

    # FSDP2 over 2 ranks, each with its half of every global batch.
    cfg = ParallelConfig(param_dtype="fp32")
    mesh = build_mesh(cfg, world_size, "cpu")
    assert (dp_rank(mesh), dp_size(mesh)) == (rank, 2)
    model = parallelize(copy.deepcopy(ref), mesh, cfg)
    opt = torch.optim.AdamW(model.parameters(), **adamw)
    for b in batches:
        opt.zero_grad()
        _loss(model, b, rows=slice(rank, rank + 1))[0].backward()
        opt.step()
    sd = full_state_dict(model)
    if rank == 0:
        assert all(v.dtype == torch.float32 and v.device.type == "cpu" for v in sd.values())
        _assert_close(sd, single.state_dict(), "FSDP AdamW parameters")
    else:
        assert sd == {}

    # Meta-device start: parallelize, allocate the shards, load a full state dict (read on rank 0 only), train.
    model = build_transformer(ref.config, device="meta")
    model = parallelize(model, mesh, cfg)
    model.to_empty(device="cpu")
    load_full_state_dict(model, initial if rank == 0 else {})
    sd = full_state_dict(model)
    if rank == 0:
        assert list(sd) == list(initial) and all(torch.equal(sd[k], initial[k]) for k in initial)
    opt = torch.optim.AdamW(model.parameters(), **adamw)
    for b in batches:
        opt.zero_grad()
        _loss(model, b, rows=slice(rank, rank + 1))[0].backward()
        opt.step()
    sd = full_state_dict(model)
    if rank == 0:
        _assert_close(sd, single.state_dict(), "meta-initialised FSDP AdamW parameters")

    # fsdp=False: replicated parameters, same gradient rule.
    out_ref, grads_ref = _reference(ref, batches[0])
    cfg = ParallelConfig(param_dtype="fp32", fsdp=False)
    model = parallelize(copy.deepcopy(ref), build_mesh(cfg, world_size, "cpu"), cfg)
    _loss(model, batches[0], rows=slice(rank, rank + 1))[0].backward()
    _assert_close(_grads(model), grads_ref, "fsdp=False gradients")

    # bf16 policy: the fp32 groups really hold fp32 during forward, the bf16 groups bf16, master weights fp32.
    cfg = ParallelConfig(param_dtype="bf16")
    model = parallelize(copy.deepcopy(ref), build_mesh(cfg, world_size, "cpu"), cfg)
    seen = {}

    def record(name, *getters):
        return lambda mod, args: seen.update({f"{name}.{k}": get().dtype for k, get in getters})

    blk, m = model.blocks[0], model
    hooks = [
        m.register_forward_pre_hook(lambda mod, args: seen.update({"root input": args[0].dtype})),
        m.head.register_forward_pre_hook(record("root", ("time_embedding", lambda: m.time_embedding[0].weight),
                                                ("time_projection", lambda: m.time_projection[1].weight),
                                                ("head", lambda: m.head.head.weight),
                                                ("head.modulation", lambda: m.head.modulation))),
        blk.self_attn.norm_q.register_forward_pre_hook(record("block", ("modulation", lambda: blk.modulation),
                                                              ("norm3", lambda: blk.norm3.weight),
                                                              ("norm_q", lambda: blk.self_attn.norm_q.weight),
                                                              ("norm_k", lambda: blk.cross_attn.norm_k.weight),
                                                              ("q", lambda: blk.self_attn.q.weight))),
        blk.ffn[2].register_forward_pre_hook(record("ffn", ("weight", lambda: blk.ffn[0].weight))),
        m.text_embedding[2].register_forward_pre_hook(record("text", ("weight", lambda: m.text_embedding[0].weight))),
        m.learnable_proj.register_forward_pre_hook(record("phi", ("weight", lambda: m.learnable_proj.proj[0].weight))),
    ]
    loss, out = _loss(model, batches[0], rows=slice(rank, rank + 1))
    loss.backward()
    for h in hooks:
        h.remove()
    bf16 = {"block.q", "ffn.weight", "text.weight"}
    assert len(seen) == 13 and seen["root input"] == torch.float32, seen
    for k, dt in seen.items():
        assert dt == (torch.bfloat16 if k in bf16 else torch.float32), (k, dt)
    assert out.dtype == torch.float32
    assert all(p.dtype == torch.float32 and p.grad.dtype == torch.float32 for p in model.parameters())
    # Same numbers as the single-device bf16 policy of flashi2v.precision.
    from flashi2v.precision import apply_precision

    single = apply_precision(copy.deepcopy(ref), torch.bfloat16)
    with torch.no_grad():
        expected = _loss(single, batches[0], rows=slice(rank, rank + 1))[1]
    rel = ((out.detach() - expected).norm() / expected.norm()).item()
    assert rel < 1e-3, rel
    return True


def test_fsdp_2_ranks_adamw_state_dict_and_bf16_policy():
    assert run_distributed(_fsdp_checks, 2) == [True, True]


# ------------------------------------------------------------------------------------------ dp x cp, 4 ranks
def _mesh_checks(rank, world_size):
    ref = _model()
    for dims in [(1, 2, 2), (2, 1, 2), (2, 2, 1), (1, 1, 4)]:
        cfg = ParallelConfig(*dims, param_dtype="fp32")
        mesh = build_mesh(cfg, world_size, "cpu")
        n, r = dp_size(mesh), dp_rank(mesh)
        batch = _batch(ref, n, ODD)  # 45 tokens: cp=4 pads to 48
        out_ref, grads_ref = _reference(ref, batch)
        model = parallelize(copy.deepcopy(ref), mesh, cfg)
        loss, out = _loss(model, batch, rows=slice(r, r + 1))
        loss.backward()
        _assert_close(out, out_ref[r : r + 1], f"mesh {dims}: output")
        _assert_close(_grads(model), grads_ref, f"mesh {dims}: gradients")
    return True


def test_dp_and_cp_meshes_4_ranks_match_single_process():
    assert run_distributed(_mesh_checks, 4, timeout_s=240) == [True] * 4
