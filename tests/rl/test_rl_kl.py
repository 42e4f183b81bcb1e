import pytest
import torch

from posttrain.rl.kl import AdaptiveKLController, FixedKLController, kl_penalty


@pytest.mark.parametrize("estimator", ["k1", "k3"])
def test_kl_is_exactly_zero_when_policy_equals_reference(estimator):
    logprobs = torch.log(torch.rand(3, 5))
    assert (kl_penalty(logprobs, logprobs.clone(), estimator) == 0).all()


def test_k3_is_never_negative_and_k1_can_be():
    torch.manual_seed(0)
    logprobs, ref_logprobs = torch.log(torch.rand(2, 1000)), torch.log(torch.rand(2, 1000))
    assert (kl_penalty(logprobs, ref_logprobs, "k3") >= 0).all()
    assert (kl_penalty(logprobs, ref_logprobs, "k1") < 0).any()


def test_k1_and_k3_by_hand():
    # p = 0.5, q = 0.25: k1 = log 2; r = q/p = 0.5, k3 = (0.5 - 1) - log 0.5 = log 2 - 0.5
    logprobs, ref_logprobs = torch.log(torch.tensor([0.5])), torch.log(torch.tensor([0.25]))
    assert kl_penalty(logprobs, ref_logprobs, "k1").item() == pytest.approx(0.693147, abs=1e-6)
    assert kl_penalty(logprobs, ref_logprobs, "k3").item() == pytest.approx(0.193147, abs=1e-6)


def test_k1_and_k3_are_unbiased_for_samples_of_the_policy():
    torch.manual_seed(0)
    p = torch.softmax(torch.randn(6), dim=0)
    q = torch.softmax(torch.randn(6), dim=0)
    true_kl = (p * (p.log() - q.log())).sum().item()
    tokens = torch.multinomial(p, 200_000, replacement=True)
    for estimator in ("k1", "k3"):
        estimate = kl_penalty(p.log()[tokens], q.log()[tokens], estimator).mean().item()
        assert estimate == pytest.approx(true_kl, abs=0.02)


def test_unknown_estimator_is_an_error_that_names_it():
    with pytest.raises(ValueError, match="k7"):
        kl_penalty(torch.zeros(1), torch.zeros(1), "k7")


def test_adaptive_kl_rises_above_target_and_falls_below():
    # target 6, horizon 10_000, 64 episodes per update: the error is clipped to +-0.2,
    # so beta moves by a factor 1 +- 0.2 * 64 / 10_000 at most.
    ctl = AdaptiveKLController(init_kl_coef=0.1, target=6.0, horizon=10_000)
    ctl.update(current_kl=12.0, n_steps=64)  # error +1.0, clipped to +0.2
    assert ctl.value == pytest.approx(0.1 * (1 + 0.2 * 64 / 10_000))
    ctl = AdaptiveKLController(0.1, 6.0, 10_000)
    ctl.update(3.0, 64)  # error -0.5, clipped to -0.2
    assert ctl.value == pytest.approx(0.1 * (1 - 0.2 * 64 / 10_000))
    ctl = AdaptiveKLController(0.1, 6.0, 10_000)
    ctl.update(torch.tensor(6.6), 64)  # error +0.1, inside the clip
    assert ctl.value == pytest.approx(0.1 * (1 + 0.1 * 64 / 10_000))
    ctl = AdaptiveKLController(0.1, 6.0, 10_000)
    ctl.update(6.0, 64)  # on target: unchanged
    assert ctl.value == pytest.approx(0.1)


def test_kl_controllers_resume_exactly_from_state_dict():
    ctl = AdaptiveKLController(0.2, 6.0, 1000)
    for kl in (9.0, 7.0, 2.0):
        ctl.update(kl, 32)
    resumed = AdaptiveKLController(1.0, 1.0, 1.0)
    resumed.load_state_dict(ctl.state_dict())
    for kl in (8.0, 4.0):
        ctl.update(kl, 32)
        resumed.update(kl, 32)
    assert resumed.value == ctl.value
    assert resumed.state_dict() == ctl.state_dict()

    fixed = FixedKLController(0.05)
    fixed.update(100.0, 64)
    assert fixed.value == 0.05
    other = FixedKLController(1.0)
    other.load_state_dict(fixed.state_dict())
    assert other.value == 0.05
