"""GRPO's arithmetic against a small example worked by hand: advantages within a group, the clipped surrogate, the
k3 KL estimate and their gradients."""

from __future__ import annotations

import math

import pytest
import torch

from tunesmith.training.grpo import STD_FLOOR, answer_rows, group_advantages, grpo_token_losses


def test_advantages_are_normalised_within_each_group():
    rewards = torch.tensor([[1.0, 0.0, 0.0, 1.0], [0.5, 0.5, 0.5, 0.5], [3.0, 0.0, 0.0, 0.0]])
    advantages = group_advantages(rewards)
    std = math.sqrt(4 * 0.25 / 3)  # unbiased: four deviations of 0.5 over n - 1 = 3
    unit = 0.5 / (std + STD_FLOOR)
    assert advantages[0].tolist() == pytest.approx([unit, -unit, -unit, unit])
    assert advantages[1].tolist() == [0.0] * 4  # a group that scored alike teaches nothing
    mean, std3 = 0.75, math.sqrt((2.25**2 + 3 * 0.75**2) / 3)
    assert advantages[2].tolist() == pytest.approx([(r - mean) / (std3 + STD_FLOOR) for r in (3.0, 0, 0, 0)])


def test_the_loss_and_its_gradient_match_the_hand_worked_example():
    """Three answer tokens: one whose ratio is clipped above (A > 0), one clipped below (A < 0), one unclipped."""
    eps, beta, a = 0.2, 0.1, 0.5 / math.sqrt(1 / 3)
    logp = torch.tensor([-1.0, -2.0, -1.0], dtype=torch.float64, requires_grad=True)
    old = torch.tensor([-1.2, -1.5, -1.0], dtype=torch.float64)
    ref = torch.tensor([-1.1, -2.5, -0.7], dtype=torch.float64)
    advantages = torch.tensor([a, -a, a], dtype=torch.float64)
    losses, kl, clipped = grpo_token_losses(logp, old, ref, advantages, eps, beta)

    def k3(delta: float) -> float:
        return math.exp(delta) - delta - 1

    # token 1: ratio e^0.2 = 1.2214 > 1.2, A > 0: the surrogate is 1.2 A (no gradient through it)
    # token 2: ratio e^-0.5 = 0.6065 < 0.8, A < 0: min(0.6065 A, 0.8 A) = 0.8 A (clipped, no gradient)
    # token 3: ratio 1: the surrogate is ratio x A, d/dlogp = A
    expected = [-1.2 * a + beta * k3(-0.1), 0.8 * a + beta * k3(-0.5), -a + beta * k3(0.3)]
    assert losses.tolist() == pytest.approx(expected, rel=1e-12)
    assert kl.tolist() == pytest.approx([k3(-0.1), k3(-0.5), k3(0.3)], rel=1e-12)
    assert clipped.tolist() == [True, True, False]
    losses.sum().backward()
    # d KL / d logp = 1 - e^(ref - logp); the unclipped token adds -A
    gradient = [beta * (1 - math.exp(-0.1)), beta * (1 - math.exp(-0.5)), -a + beta * (1 - math.exp(0.3))]
    assert logp.grad.tolist() == pytest.approx(gradient, rel=1e-12)


def test_without_a_reference_or_beta_there_is_no_kl_term():
    logp = torch.tensor([-1.0, -3.0])
    losses, kl, _ = grpo_token_losses(logp, logp, None, torch.tensor([1.0, -1.0]), 0.2, 0.5)
    assert losses.tolist() == [-1.0, 1.0] and kl.tolist() == [0.0, 0.0]


def test_rows_learn_each_answer_token_from_the_state_before_it():
    rows = answer_rows([[5, 6], [7]], [[8, 9], [10, 11, 12]], pad_id=0)
    assert rows.input_ids.tolist() == [[5, 6, 8, 9], [7, 10, 11, 12]]
    assert rows.attention.tolist() == [[1, 1, 1, 1], [1, 1, 1, 1]]
    # row 0: states 1 and 2 predict 8 and 9; row 1 (offset 4): states 0, 1, 2 predict 10, 11, 12
    assert rows.positions.tolist() == [1, 2, 4, 5, 6]
    assert rows.targets.tolist() == [8, 9, 10, 11, 12] and rows.owner.tolist() == [0, 0, 1, 1, 1]
    padded = answer_rows([[5]], [[8]], pad_id=0)
    assert padded.input_ids.tolist() == [[5, 8]]
