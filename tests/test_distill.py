"""Self-distillation through time: the teacher's two-step targets against their law computed by enumeration,
and a distillation run from a teacher checkpoint."""
from __future__ import annotations

import itertools
import math
from pathlib import Path

import pytest
import torch

from bijdiff.app.checkpoint import load_module
from bijdiff.app.distill import start_from_teacher
from bijdiff.app.train import train
from bijdiff.diffusion import Absorbing, LogLinearNoise, reverse_schedule, unmask_probabilities
from bijdiff.diffusion.distill import distillation_nats, student_grid, two_step_targets
from bijdiff.errors import CheckpointError, ConfigError
from bijdiff.lit import LitLanguageModel
from tests.conftest import tiny_config
from tests.test_conditional_sampling import AbsorbingOracle, V, joint_law

MASK = V  # the absorbing graph's [MASK] id
SIGMAS = torch.tensor([1.5, 0.8, 0.3])  # unmasking probabilities 0.29 and 0.53: both branches matter


class TiltedOracle(AbsorbingOracle):
    """The exact conditionals tilted by the noise level: a teacher whose token law changes between its two
    steps (an exact one would hardly change on average, which would hide a wrong weight of either step)."""

    def __init__(self, seed: int = 5) -> None:
        super().__init__(joint_law())
        self.tilt = 2.0 * torch.randn(4, V, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)

    def logits(self, x_t, sigma):
        return super().logits(x_t, sigma) + sigma.double()[:, None, None] * self.tilt


def two_step_law(teacher: AbsorbingOracle, x_a: torch.Tensor, sigmas: torch.Tensor, second: AbsorbingOracle) -> torch.Tensor:
    """``[M, V]``: for each masked position of ``x_a [L]``, the law of its token given that it unmasks in two
    analytic steps, the teacher's and then ``second``'s, by enumerating every outcome of the first step (stay
    masked, or each token)."""
    levels = sigmas.double()
    p1, p2 = unmask_probabilities(levels, levels[:-1] - levels[1:], "analytic")
    batch = lambda x: x[None]  # noqa: E731
    q_a = torch.softmax(teacher.logits(batch(x_a), sigmas[:1]), -1)[0].double()
    masked = (x_a == MASK).nonzero().flatten().tolist()
    laws = []
    for i in masked:
        later = torch.zeros(V, dtype=torch.float64)  # E q_b(i | x_b), i still masked after the first step
        others = [j for j in masked if j != i]
        for outcome in itertools.product([None, *range(V)], repeat=len(others)):
            weight, x_b = torch.tensor(1.0, dtype=torch.float64), x_a.clone()
            for j, token in zip(others, outcome):
                weight = weight * ((1 - p1) if token is None else p1 * q_a[j, token])
                if token is not None:
                    x_b[j] = token
            later += weight * torch.softmax(second.logits(batch(x_b), sigmas[1:2]), -1)[0, i].double()
        laws.append((p1 * q_a[i] + (1 - p1) * p2 * later) / (1 - (1 - p1) * (1 - p2)))
    return torch.stack(laws)


@pytest.mark.parametrize("second_step", ["teacher", "another model"])
def test_two_step_targets_are_unbiased_for_the_two_step_law(second_step: str) -> None:
    """Self-distillation (the teacher takes both steps) and the consistency-style variant (another model,
    the student, takes the second): the targets' mean is the enumerated law of the two steps."""
    teacher = TiltedOracle()
    second = teacher if second_step == "teacher" else TiltedOracle(seed=6)
    x_a = torch.tensor([MASK, 1, MASK, MASK])
    exact = two_step_law(teacher, x_a, SIGMAS, second)
    n = 20_000
    targets = two_step_targets(teacher, Absorbing(V), x_a.expand(n, -1).clone(), SIGMAS.expand(n, -1),
                               torch.Generator().manual_seed(0), None if second is teacher else second)
    targets = targets.double().view(n, 3, V)
    assert torch.allclose(targets.sum(-1), torch.ones(n, 3, dtype=torch.float64), atol=1e-5)  # distributions
    mean, stderr = targets.mean(0), targets.std(0) / n**0.5
    assert bool(((mean - exact).abs() <= 5 * stderr + 1e-6).all()), (mean, exact, stderr)
    # the test can tell: the law is far, against the noise, from either step's token law alone and from
    # the law with the other model in the second step
    other = TiltedOracle(seed=6) if second is teacher else teacher
    for q in (*(torch.softmax(m.logits(x_a[None], level), -1)[0, x_a == MASK].double()
                for m, level in ((teacher, SIGMAS[:1]), (second, SIGMAS[1:2]))), two_step_law(teacher, x_a, SIGMAS, other)):
        assert float((exact - q).abs().max()) > 20 * float(stderr.max())


def test_student_grid_walks_the_analytic_sampler_s_grid() -> None:
    noise = LogLinearNoise()
    grid = student_grid(noise, 8, "cpu")
    sigmas, _ = reverse_schedule(noise, 8, "analytic", "cpu")
    torch.testing.assert_close(grid[:, 0], sigmas[:-1])
    torch.testing.assert_close(grid[:, 2], sigmas[1:])
    teacher_sigmas, _ = reverse_schedule(noise, 16, "analytic", "cpu")  # the teacher's 16 steps stop at the midpoints
    torch.testing.assert_close(grid[:, 1], teacher_sigmas[1::2])


def test_a_student_equal_to_a_context_free_teacher_has_zero_loss_and_gradient() -> None:
    """When the teacher's token law does not depend on the context, every target is that law: a student
    with the same logits is at the minimum, with zero loss and zero gradient, under either method."""
    logits = torch.randn(5, V, generator=torch.Generator().manual_seed(1))

    class ContextFree(torch.nn.Module):
        def __init__(self, table: torch.Tensor) -> None:
            super().__init__()
            self.table = torch.nn.Parameter(table.clone())

        def logits_at(self, x_t, sigma, where):
            return self.table.expand(x_t.shape[0], -1, -1)[where]

    student = ContextFree(logits)
    x0 = torch.randint(V, (16, 5), generator=torch.Generator().manual_seed(2))
    for method in ("sdtt", "consistency"):
        student.table.grad = None
        nats = distillation_nats(student, ContextFree(logits), Absorbing(V), LogLinearNoise(), x0, 4,
                                 generator=torch.Generator().manual_seed(3), method=method)
        nats.sum().backward()
        assert float(nats.detach().abs().max()) < 1e-5
        assert float(student.table.grad.abs().max()) < 1e-5
    shifted = ContextFree(logits + torch.randn(5, V, generator=torch.Generator().manual_seed(4)))
    away = {method: float(distillation_nats(shifted, ContextFree(logits), Absorbing(V), LogLinearNoise(), x0, 4,
                                            generator=torch.Generator().manual_seed(3), method=method).detach().sum())
            for method in ("sdtt", "consistency")}
    assert away["sdtt"] > 0.1
    # the consistency target mixes in the student's own law, so the same student is nearer to it (convexity of KL)
    assert 0 < away["consistency"] < away["sdtt"] - 0.01, away
    with pytest.raises(ValueError, match="distillation method 'ddim'"):
        distillation_nats(student, ContextFree(logits), Absorbing(V), LogLinearNoise(), x0, 4, method="ddim")


@pytest.fixture(scope="module")
def teacher(tmp_path_factory: pytest.TempPathFactory, wiki_files) -> Path:
    """A tiny bijective teacher's last checkpoint (the student's command line asks for the default model)."""
    tmp = tmp_path_factory.mktemp("teacher")
    cfg = tiny_config(wiki_files, tmp / "run", tmp / "cache", "model=bijective", "model.d_model=32", "model.n_layers=2",
                      "model.n_heads=2", "model.cond_dim=16")
    return Path(train(cfg)["last_ckpt"])


@pytest.mark.parametrize("method", ["sdtt", "consistency"])
def test_a_distillation_run_trains_the_teacher_s_network_from_its_weights(teacher, tiny_train_cfg, method, caplog) -> None:
    cfg = tiny_train_cfg(f"distill.teacher={teacher}", "distill.steps=4", "trainer.max_steps=2", "data.seq_len=32",
                         "data.files.train=null", f"distill.method={method}")
    with caplog.at_level("INFO", logger="bijdiff"):
        result = train(cfg)
    assert f"distill ({method}): student starts from the teacher's weights" in caplog.text
    student, trained = load_module(result["last_ckpt"]), load_module(teacher)
    assert student.hparams["cfg"]["model"] == trained.hparams["cfg"]["model"]  # bijective, not the command line's standard
    assert student.hparams["cfg"]["data"]["seq_len"] == 16  # the teacher's blocks, not the command line's
    assert student.hparams["cfg"]["data"]["files"] == trained.hparams["cfg"]["data"]["files"]  # no training file given
    assert student.extra_state["tokenizer"] == trained.extra_state["tokenizer"]
    moved = [not torch.equal(a, b) for a, b in zip(student.model.parameters(), trained.model.parameters())]
    assert any(moved)  # it trained
    assert math.isfinite(result["best_val_nll"])


def test_the_student_takes_its_own_second_step_without_gradient_or_dropout() -> None:
    """The consistency target asks the student in eval mode (the sampler's law) under no gradient, and leaves it training."""
    modes = []

    class Recording(TiltedOracle):
        def __init__(self) -> None:
            super().__init__(seed=6)
            self.weight = torch.nn.Parameter(torch.zeros(()))

        def logits(self, x_t, sigma):
            modes.append(self.training)
            return super().logits(x_t, sigma) + self.weight

    student = Recording().train()
    targets = two_step_targets(TiltedOracle(), Absorbing(V), torch.full((64, 4), MASK), SIGMAS.expand(64, -1),
                               torch.Generator().manual_seed(0), student)
    assert modes == [False] and student.training
    assert not targets.requires_grad


def test_the_student_starts_as_its_teacher(teacher) -> None:
    trained = load_module(teacher)
    module = LitLanguageModel(trained.hparams["cfg"], trained.hparams["num_tokens"], seed=5)
    start_from_teacher(module, trained, 4, "consistency")
    for a, b in zip(module.model.parameters(), trained.model.parameters()):
        assert torch.equal(a, b)
    with module.ema.averaged(module.model):  # the averages start there too
        assert all(torch.equal(a, b) for a, b in zip(module.model.parameters(), trained.model.parameters()))
    assert module.objective.teacher is trained.model and module.objective.steps == 4
    assert module.objective.method == "consistency"
    seen = {}
    with pytest.MonkeyPatch.context() as patch:  # the objective hands its method to the loss
        patch.setattr("bijdiff.objectives.distillation_nats", lambda *args, **kwargs: seen.update(kwargs))
        module.objective.train_nats(module.model, torch.zeros(2, 16, dtype=torch.long), torch.ones(2, 16, dtype=torch.bool))
    assert seen["method"] == "consistency"


def test_bad_teachers_are_refused_with_what_to_change(teacher, tiny_train_cfg, tmp_path, wiki_files) -> None:
    ar = train(tiny_config(wiki_files, tmp_path / "ar", tmp_path / "cache", "model=ar"))["last_ckpt"]
    with pytest.raises(ConfigError, match="is an autoregressive model.*trained with diffusion=absorb"):
        train(tiny_train_cfg(f"distill.teacher={ar}"))
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        train(tiny_train_cfg(f"distill.teacher={tmp_path / 'nothing.ckpt'}"))
    for bad, message in (("distill.method=ddim", "distill.method=ddim: choose .*sdtt: .*consistency: "),
                         ("distill.steps=0", "distill.steps must be ≥ 1")):
        with pytest.raises(ConfigError, match=message):
            train(tiny_train_cfg(f"distill.teacher={teacher}", bad))
        with pytest.raises(ConfigError, match=message):  # before any teacher is loaded
            train(tiny_train_cfg(f"distill.teacher={tmp_path / 'nothing.ckpt'}", bad))
