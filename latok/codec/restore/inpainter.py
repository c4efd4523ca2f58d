"""The Latent Inpainting Transformer: restores dropped latent positions.

Input, per latent position (DESIGN.md, "What a quick inpainter probe showed"):
the hold-filled value, the interp-filled value, a learned mask token on dropped
positions, the keep flag, staleness (latent frames since the position was last
kept), the distance to the next kept value, and the masking threshold tau.
Positions are grouped into ``patch_size x patch_size`` tokens, as in DiT, which
keeps attention affordable on CPU at 240p (30 x 52 latent positions per frame).

Output, per dropped position: ``hold + a * (interp - hold) + correction``, with a
scalar blend ``a`` and a correction vector both predicted and zero at
initialisation (so an untrained model *is* hold).  The blend makes "interpolate
here" one number per position rather than C numbers squeezed through the token
width.  Kept positions pass through exactly.

The rule itself says where a dropped value can lie: it was dropped because
``mean_c |z - ref| < tau``, and with the ``last-kept`` reference ``ref`` is the
hold value.  So the prediction is projected onto that L1 ball around hold
(radius ``tau * staleness`` with the ``previous`` reference).  The truth is inside
the ball and the ball is convex, so the projection never moves a prediction
further from the truth; at small tau it caps how far the model can stray from
hold.

Each block: pre-norm spatial self-attention over ``h*w`` inside every latent
frame, then temporal self-attention over ``t`` at every position (bidirectional,
or causal for streaming), then an MLP.  Positions enter only through rotary
embeddings (2-D over (y, x), 1-D over t), so the model runs at any resolution
and clip length.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from einops import rearrange
from huggingface_hub import ModelHubMixin
from torch import nn

from latok.codec.restore.fills import hold_fill, interp_fill
from latok.codec.tokens import next_kept_index, staleness
from latok.errors import InvalidInputError

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
_STALENESS_SCALE = 8.0  # staleness / distance features are squashed as x / (x + scale)
_TAU_SCALE = 0.5  # tau enters as tau / (tau + scale); an unknown tau (random masks) as 1


@dataclass(frozen=True)
class InpainterConfig:
    """Hyperparameters of :class:`InpaintingTransformer` (saved as ``config.json``)."""

    latent_channels: int = 32
    width: int = 128
    depth: int = 4
    heads: int = 4
    mlp_ratio: float = 4.0
    causal: bool = False
    rope_base: float = 100.0
    patch_size: int = 2  # latent positions per token side: 2x2 patches cut attention cost 16x
    decoder_metric: bool = False  # carries a (C, C) decoder metric buffer (see InpaintingTransformer.error)

    def __post_init__(self):
        for name, (kind, low, high) in CONFIG_LIMITS.items():
            value = getattr(self, name)
            if kind is bool:
                valid = type(value) is bool
            elif kind is int:
                valid = type(value) is int and low <= value <= high
            else:
                valid = type(value) in (int, float) and math.isfinite(value) and low <= value <= high
            if not valid:
                allowed = "true or false" if kind is bool else f"{'an integer' if kind is int else 'a number'} in [{low:g}, {high:g}]"
                raise InvalidInputError(f"inpainter config {name} = {value!r:.40} is not allowed: must be {allowed}")
        if self.width % (2 * self.heads) or (self.width // self.heads) % 4:
            raise InvalidInputError(f"width {self.width} must split into {self.heads} heads with a head size divisible by 4")
        if self.estimated_parameters > MAX_PARAMETERS:
            raise InvalidInputError(f"inpainter config describes about {self.estimated_parameters / 1e6:.0f}M parameters, over the {MAX_PARAMETERS / 1e6:.0f}M latok loads")

    @property
    def estimated_parameters(self) -> int:
        """Parameters of the blocks (spatial + temporal attention, MLP), the bulk of the model: checked before building it."""
        return int(self.depth * (8 + 2 * self.mlp_ratio) * self.width**2)


# One schema for config.json: type, then the closed range of each field (checked before anything is built).
CONFIG_LIMITS = {
    "latent_channels": (int, 1, 4096),
    "width": (int, 8, 4096),
    "depth": (int, 1, 64),
    "heads": (int, 1, 64),
    "mlp_ratio": (float, 0.25, 16.0),
    "causal": (bool, None, None),
    "rope_base": (float, 2.0, 1e6),
    "patch_size": (int, 1, 16),
    "decoder_metric": (bool, None, None),
}
MAX_PARAMETERS = 1 << 26  # 256 MiB of float32: far above any inpainter latok trains, far below what a config could ask for


PRESETS = {
    "xs": InpainterConfig(width=96, depth=3, heads=4),
    "s": InpainterConfig(width=192, depth=6, heads=6),
}


def rotary_angles(positions: torch.Tensor, dim: int, base: float) -> torch.Tensor:
    """``(..., n)`` positions -> ``(..., n, dim/2)`` rotation angles."""
    frequencies = base ** (-torch.arange(0, dim, 2, device=positions.device, dtype=torch.float32) / dim)
    return positions.float().unsqueeze(-1) * frequencies


def rotary_tables(angles: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(n, d/2)`` angles -> cos, sin ``(n, d)`` laid out for :func:`apply_rotary` (halves, not pairs)."""
    return angles.cos().repeat(1, 2), angles.sin().repeat(1, 2)


def apply_rotary(x: torch.Tensor, tables: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """Rotate ``x (..., n, d)``: dimension i pairs with i + d/2 (the GPT-NeoX layout)."""
    cos, sin = tables
    x1, x2 = x.chunk(2, dim=-1)
    return x * cos.to(x.dtype) + torch.cat((-x2, x1), dim=-1) * sin.to(x.dtype)


class Attention(nn.Module):
    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width, bias=False)
        self.out = nn.Linear(width, width)

    def forward(self, x: torch.Tensor, rotary: tuple[torch.Tensor, torch.Tensor], causal: bool = False) -> torch.Tensor:
        q, k, v = rearrange(self.qkv(x), "b n (three h d) -> three b h n d", three=3, h=self.heads)
        q, k = apply_rotary(q, rotary), apply_rotary(k, rotary)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
        return self.out(rearrange(y, "b h n d -> b n (h d)"))


class Block(nn.Module):
    """Spatial attention within each latent frame -> temporal attention per position -> MLP."""

    def __init__(self, config: InpainterConfig):
        super().__init__()
        width = config.width
        self.norm_spatial = nn.LayerNorm(width)
        self.spatial = Attention(width, config.heads)
        self.norm_temporal = nn.LayerNorm(width)
        self.temporal = Attention(width, config.heads)
        self.norm_mlp = nn.LayerNorm(width)
        hidden = int(width * config.mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(width, hidden), nn.GELU(), nn.Linear(hidden, width))
        self.causal = config.causal

    def forward(self, x: torch.Tensor, spatial_rotary: tuple, temporal_rotary: tuple) -> torch.Tensor:
        batch, frames, height, width, _ = x.shape
        x = rearrange(x, "b t h w c -> (b t) (h w) c")
        x = x + self.spatial(self.norm_spatial(x), spatial_rotary)
        x = rearrange(x, "(b t) (h w) c -> (b h w) t c", b=batch, t=frames, h=height, w=width)
        x = x + self.temporal(self.norm_temporal(x), temporal_rotary, causal=self.causal)
        x = x + self.mlp(self.norm_mlp(x))
        return rearrange(x, "(b h w) t c -> b t h w c", b=batch, h=height, w=width)


class InpaintingTransformer(nn.Module, ModelHubMixin, library_name="latok", tags=["video", "tokenizer", "latent-inpainting"]):
    """Predicts every dropped latent position from the kept ones.

    Checkpoints are ``config.json`` + ``model.safetensors`` and load the way ``huggingface_hub`` models do:
    ``from_pretrained`` takes a local folder or a hub id (``revision=``, ``cache_dir=``, ``local_files_only=``),
    ``save_pretrained`` writes the two files, and ``push_to_hub`` uploads them.

    ``forward(latent, keep, tau, reference, motion, weights)``: ``latent`` is ``(B, C, t, h, w)``
    normalised with kept values in place (dropped positions are ignored), ``keep`` is
    ``(B, t, h, w)`` bool with frame 0 kept, ``tau`` the threshold that made the mask
    (a float or one per clip; ``None`` or ``inf`` when unknown, e.g. a random mask), and ``motion``
    the frames' motion (``(B, t, 2)``, or ``(B, t, 2, gh, gw)`` per block) when the rule was motion-compensated (hold and interp,
    its inputs and the centre of its L1 ball, then follow the motion), and ``weights`` the rule's channel weights
    (its ball is then ``mean_c w_c |delta_c| <= tau``; ``None``: the plain rule's).
    Returns the restored ``(B, C, t, h, w)`` latent; kept positions are passed
    through bit-exactly.
    """

    def __init__(self, config: InpainterConfig):
        super().__init__()
        self.config = config
        channels, width = config.latent_channels, config.width
        features = 2 * channels + 5  # hold, interp, keep, staleness, distance to next, has next, tau
        patch = config.patch_size
        self.mask_token = nn.Parameter(torch.zeros(features))  # marks dropped positions
        self.embed = nn.Linear(patch * patch * features, width)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.depth))
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, patch * patch * (channels + 1))  # correction + interp blend per position
        nn.init.zeros_(self.head.weight)  # start as exactly hold
        nn.init.zeros_(self.head.bias)
        if config.decoder_metric:
            self.register_buffer("decoder_metric", torch.eye(channels))

    def set_decoder_metric(self, metric: torch.Tensor) -> None:
        """Measure errors with ``metric`` (``(C, C)``, from :meth:`VideoAutoencoder.decoder_metric`) from now on."""
        channels = self.config.latent_channels
        if metric.shape != (channels, channels):
            raise InvalidInputError(f"decoder metric must be ({channels}, {channels}), got {tuple(metric.shape)}")
        if not self.config.decoder_metric:
            self.config = replace(self.config, decoder_metric=True)
            self.register_buffer("decoder_metric", torch.empty(channels, channels, device=self.head.weight.device))
        self.decoder_metric.copy_(metric)

    def error(self, restored: torch.Tensor, truth: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """``(B, t)`` squared error of ``restored`` on the dropped positions of every latent frame.

        With a decoder metric G, a position's error e counts as e^T G e, which is about the
        squared error it causes in decoded pixels; without one it is |e|^2.
        """
        difference = (restored - truth) * (~keep).unsqueeze(1)
        if self.config.decoder_metric:
            factor = torch.linalg.cholesky(self.decoder_metric.float()).to(difference)  # G = L L^T
            difference = torch.einsum("bcthw,cd->bdthw", difference, factor)
        return difference.pow(2).sum(dim=(1, 3, 4))

    def forward(
        self,
        latent: torch.Tensor,
        keep: torch.Tensor,
        tau: float | torch.Tensor | None = None,
        reference: str = "last-kept",
        motion: torch.Tensor | None = None,
        weights: Sequence[float] | None = None,
    ) -> torch.Tensor:
        self._check(latent, keep)
        _, channels, frames, height, width = latent.shape
        p = self.config.patch_size
        tau = self._tau(tau, latent)
        hold = hold_fill(latent, keep, motion)  # with motion, the references follow it, as the rule's did
        future = hold if self.config.causal else interp_fill(latent, keep, motion)
        features = self._features(keep, hold, future, tau)  # (B, t, h, w, F)
        features = torch.where(keep.unsqueeze(-1), features, features + self.mask_token)
        pad_h, pad_w = -height % p, -width % p
        features = F.pad(features, (0, 0, 0, pad_w, 0, pad_h))  # zero features, flagged as kept: inert
        tokens = rearrange(features, "b t (h p1) (w p2) f -> b t h w (p1 p2 f)", p1=p, p2=p)
        x = self.embed(tokens)  # (B, t, h/p, w/p, width)
        spatial, temporal = self._angles(frames, x.shape[2], x.shape[3], latent.device)
        for block in self.blocks:
            x = block(x, spatial, temporal)
        out = rearrange(self.head(self.norm(x)), "b t h w (p1 p2 c) -> b c t (h p1) (w p2)", p1=p, p2=p)
        out = out[..., :height, :width].to(hold.dtype)
        correction, blend = out[:, :channels], out[:, channels:]
        delta = blend * (future - hold) + correction
        radius = tau.view(-1, 1, 1, 1, 1) * (staleness(keep).float().unsqueeze(1) if reference == "previous" else 1.0)
        if weights is None:
            restored = hold + project_l1_ball(delta, radius)
        else:  # the rule measured change as mean_c w_c |dz_c|: the ball is that of the scaled latent
            scale = torch.tensor(weights, dtype=delta.dtype, device=delta.device).view(1, -1, 1, 1, 1)
            restored = hold + project_l1_ball(delta * scale, radius) / scale
        return torch.where(keep.unsqueeze(1), latent, restored)

    @staticmethod
    def _tau(tau: float | torch.Tensor | None, latent: torch.Tensor) -> torch.Tensor:
        """``(B,)`` float32 thresholds; ``inf`` where unknown."""
        if tau is None:
            tau = float("inf")
        tau = torch.as_tensor(tau, dtype=torch.float32, device=latent.device).flatten()
        if tau.numel() == 1:
            tau = tau.expand(latent.shape[0])
        if tau.shape != (latent.shape[0],) or bool((tau.nan_to_num(nan=-1.0) < 0).any()):
            raise InvalidInputError(f"tau must be one number >= 0 or one per clip ({latent.shape[0]}), got {tau.tolist()}")
        return tau

    def _features(self, keep: torch.Tensor, hold: torch.Tensor, future: torch.Tensor, tau: torch.Tensor) -> torch.Tensor:
        frames = keep.shape[1]
        time = torch.arange(frames, device=keep.device).view(1, frames, 1, 1)
        stale = staleness(keep).float()
        following = next_kept_index(keep)
        has_next = following < frames
        if self.config.causal:  # a streaming model must not see the future through its inputs either
            has_next = torch.zeros_like(has_next)
            following = time.expand_as(following)
        ahead = torch.where(has_next, following - time, torch.zeros_like(following)).float()
        known = torch.where(torch.isinf(tau), torch.ones_like(tau), tau / (tau + _TAU_SCALE))
        scalars = torch.stack(
            [
                keep.float(),
                stale / (stale + _STALENESS_SCALE),
                ahead / (ahead + _STALENESS_SCALE),
                has_next.float(),
                known.view(-1, 1, 1, 1).expand_as(stale),
            ],
            dim=-1,
        )  # (B, t, h, w, 5)
        values = torch.cat([hold, future], dim=1)  # (B, 2C, t, h, w)
        return torch.cat([rearrange(values, "b c t h w -> b t h w c"), scalars.to(values.dtype)], dim=-1)

    def _angles(self, frames: int, height: int, width: int, device) -> tuple[tuple, tuple]:
        head_dim = self.config.width // self.config.heads
        base = self.config.rope_base
        ys, xs = torch.meshgrid(torch.arange(height, device=device), torch.arange(width, device=device), indexing="ij")
        spatial = torch.cat(
            [rotary_angles(ys.flatten(), head_dim // 2, base), rotary_angles(xs.flatten(), head_dim // 2, base)], dim=-1
        )  # (h*w, head_dim/2): half the pairs rotate with y, half with x
        temporal = rotary_angles(torch.arange(frames, device=device), head_dim, base)  # (t, head_dim/2)
        return rotary_tables(spatial), rotary_tables(temporal)

    def _check(self, latent: torch.Tensor, keep: torch.Tensor) -> None:
        channels = self.config.latent_channels
        if latent.ndim != 5 or latent.shape[1] != channels:
            raise InvalidInputError(f"inpainter expects latents (B, {channels}, t, h, w), got {tuple(latent.shape)}")
        if keep.shape != (latent.shape[0], *latent.shape[2:]) or keep.dtype != torch.bool:
            raise InvalidInputError(f"keep must be bool {(latent.shape[0], *latent.shape[2:])}, got {keep.dtype} {tuple(keep.shape)}")

    # -- checkpoints ------------------------------------------------------------------------

    def save_pretrained(self, save_directory: str | os.PathLike, *, push_to_hub: bool = False, repo_id: str | None = None, **hub_options) -> Path:
        """Write ``config.json`` and ``model.safetensors`` into ``save_directory`` (atomically; nothing else),
        and with ``push_to_hub`` upload them to ``repo_id`` (``huggingface_hub``'s ``push_to_hub`` options)."""
        directory = Path(save_directory)
        self._save_pretrained(directory)
        if push_to_hub:
            self.push_to_hub(repo_id or directory.name, **hub_options)
        return directory

    def _save_pretrained(self, save_directory: Path) -> None:
        from latok._fs import atomic_path, write_safetensors

        save_directory = Path(save_directory)
        save_directory.mkdir(parents=True, exist_ok=True)
        with atomic_path(save_directory / CONFIG_NAME) as tmp:
            tmp.write_text(json.dumps(asdict(self.config), indent=2, sort_keys=True) + "\n")
        state = {name: tensor.detach().contiguous().cpu() for name, tensor in self.state_dict().items()}
        write_safetensors(state, save_directory / WEIGHTS_NAME)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, device: str | torch.device = "cpu", **hub_options) -> InpaintingTransformer:
        """Load a checkpoint: a local folder written by :meth:`save_pretrained`, or a hub id (fetched into the
        hub cache; ``revision=``, ``cache_dir=``, ``local_files_only=``, ``token=`` as ``huggingface_hub`` takes them)."""
        directory = Path(pretrained_model_name_or_path)
        if not directory.is_dir():
            directory = _download(str(pretrained_model_name_or_path), **hub_options)
        return cls._load(directory, device)

    @classmethod
    def _from_pretrained(cls, *, model_id: str, revision, cache_dir, force_download, local_files_only, token, device="cpu", **unused) -> InpaintingTransformer:
        """``ModelHubMixin``'s hook (what :meth:`from_pretrained` does, for code that calls it directly)."""
        options = dict(revision=revision, cache_dir=cache_dir, force_download=force_download, local_files_only=local_files_only, token=token)
        return cls.from_pretrained(model_id, device, **options)

    @classmethod
    def _load(cls, directory: Path, device: str | torch.device) -> InpaintingTransformer:
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        from latok.errors import CorruptWeightsError, WeightsNotFoundError

        if not (directory / CONFIG_NAME).is_file() or not (directory / WEIGHTS_NAME).is_file():
            raise WeightsNotFoundError(f"{directory}: no inpainter checkpoint ({CONFIG_NAME} + {WEIGHTS_NAME})")
        try:
            fields = json.loads((directory / CONFIG_NAME).read_text(), parse_constant=_refuse_constant)
            if type(fields) is not dict:
                raise ValueError("config.json is not a JSON object")
            config = InpainterConfig(**fields)
            state = load_file(str(directory / WEIGHTS_NAME), device="cpu")
            for name, tensor in state.items():
                if tensor.dtype != torch.float32:
                    raise ValueError(f"tensor {name} is {str(tensor.dtype).removeprefix('torch.')}; inpainter checkpoints hold float32")
                if not bool(torch.isfinite(tensor).all()):
                    raise ValueError(f"tensor {name} holds NaN or infinite values")
            with torch.device("meta"):  # names and shapes first: a mismatched file never makes us build the model
                expected = {name: tuple(t.shape) for name, t in cls(config).state_dict().items()}
            found = {name: tuple(t.shape) for name, t in state.items()}
            if found != expected:
                wrong = sorted(set(found) ^ set(expected)) or sorted(n for n in found if found[n] != expected[n])
                raise ValueError(f"weights do not fit config.json (first difference: {wrong[0]})")
            model = cls(config)
            model.load_state_dict(state)
        except (ValueError, TypeError, RuntimeError, OSError, SafetensorError) as error:  # JSONDecodeError is a ValueError
            reason = str(error).splitlines()[0] if str(error) else type(error).__name__
            raise CorruptWeightsError(f"{directory}: unreadable inpainter checkpoint ({reason})") from None
        return model.to(device).eval()

    @property
    def fingerprint(self) -> str:
        """Short hash of the weights: what a ``.latok`` file's lit guard was decided with."""
        from latok.weights import tensor_digest

        return tensor_digest(self.state_dict())[:16]

    @property
    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


def _refuse_constant(name: str):
    raise ValueError(f"config.json holds {name}, which is not a JSON number")


def _download(repo_id: str, **options) -> Path:
    """A hub checkpoint's two files, in the hub cache; a missing repo or file is one :class:`WeightsNotFoundError`."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import HfHubHTTPError, HFValidationError, LocalEntryNotFoundError, RepositoryNotFoundError

    from latok.errors import WeightsNotFoundError

    try:
        from huggingface_hub.utils import validate_repo_id

        validate_repo_id(repo_id)
    except HFValidationError:
        raise WeightsNotFoundError(f"{repo_id}: no inpainter checkpoint folder there, and not a hub id") from None
    from latok.weights import offline

    if offline():
        options = {**options, "local_files_only": True}  # LATOK_OFFLINE: the hub cache only, no network call
    try:
        paths = [Path(hf_hub_download(repo_id, name, **options)) for name in (CONFIG_NAME, WEIGHTS_NAME)]
    except (HfHubHTTPError, LocalEntryNotFoundError, RepositoryNotFoundError, ValueError, OSError) as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise WeightsNotFoundError(f"{repo_id}: no local folder, and the hub gave no inpainter checkpoint ({reason[:200]})") from None
    if paths[0].parent != paths[1].parent:
        raise WeightsNotFoundError(f"{repo_id}: the hub's {CONFIG_NAME} and {WEIGHTS_NAME} are not one snapshot")
    return paths[0].parent


def project_l1_ball(delta: torch.Tensor, radius: torch.Tensor) -> torch.Tensor:
    """Euclidean projection of every position's ``delta[:, :, t, y, x]`` onto ``{v: mean_c |v| <= radius}``.

    ``delta`` is ``(B, C, t, h, w)``; ``radius`` broadcasts to ``(B, 1, t, h, w)`` (``inf``: no limit).
    The sort-based algorithm of Duchi et al. (ICML 2008), vectorised over positions; differentiable
    almost everywhere.
    """
    channels = delta.shape[1]
    limit = (radius * channels).to(delta.dtype).expand(delta.shape[0], 1, *delta.shape[2:])
    magnitude = delta.abs()
    outside = magnitude.sum(dim=1, keepdim=True) > limit
    if not bool(outside.any()):
        return delta
    finite = torch.where(outside, limit, torch.zeros_like(limit))  # inf never reaches the arithmetic
    ordered = magnitude.sort(dim=1, descending=True).values
    cumulative = ordered.cumsum(dim=1)
    rank = torch.arange(1, channels + 1, device=delta.device, dtype=delta.dtype).view(1, -1, 1, 1, 1)
    active = (ordered - (cumulative - finite) / rank > 0).sum(dim=1, keepdim=True).clamp(min=1)
    threshold = (cumulative.gather(1, active - 1) - finite) / active
    projected = delta.sign() * (magnitude - threshold).clamp(min=0)
    return torch.where(outside, projected, delta)


def preset(name: str, **overrides) -> InpainterConfig:
    if name not in PRESETS:
        raise InvalidInputError(f"unknown inpainter preset {name!r}; available: {', '.join(PRESETS)}")
    return InpainterConfig(**{**asdict(PRESETS[name]), **overrides})
