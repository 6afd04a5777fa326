"""HAQ's DDPG agent (Lillicrap et al. 2016 as HAQ uses it; mit-han-lab/haq ``lib/rl/ddpg.py``).

- actor ``s → 300 → 300 → 1`` (ReLU, sigmoid out: an action in [0, 1]);
- critic ``fc(s) + fc(a) → ReLU → 300 → ReLU → 1``;
- Adam, lr 1e-4 (actor) and 1e-3 (critic); soft target updates with τ = 0.01; discount 1;
- replay buffer of 128 transitions per layer, minibatches of 64 (drawn without replacement
  when the buffer holds enough, else with replacement);
- the reward of a sampled batch minus a moving-average baseline of batch means
  (``b ← b + 0.5·(mean − b)``) is the critic's reward;
- exploration: a truncated normal on [0, 1] around the actor's output, σ given by the
  caller (HAQ: ``0.5·0.99^(episode − warm-up)``); warm-up episodes draw uniform actions.

Every value above is the original's default (``rl_quantize.py`` arguments: hidden 300,
lr_a 1e-4, lr_c 1e-3, tau 0.01, discount 1, bsize 64, rmsize 128 per layer, init_delta
0.5, delta_decay 0.99, warmup 20). The agent runs on the CPU in float32 on one thread
(networks this small gain nothing from more, and on a busy machine a thread pool's
barriers cost far more than the work; the trial's thread count is restored after each
call). Its randomness
(network initialisation, exploration, minibatches) comes from its own seeded generators,
saved in :meth:`DDPGAgent.state_dict`, so a restored agent continues exactly.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from statistics import NormalDist
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F


@dataclass(frozen=True)
class DDPGConfig:
    """The agent's hyperparameters (defaults: HAQ's). Learning rates per Adam step;
    ``replay_per_layer`` transitions of memory per layer of the network searched."""

    hidden: int = 300
    lr_actor: float = 1e-4
    lr_critic: float = 1e-3
    tau: float = 0.01
    discount: float = 1.0
    batch_size: int = 64
    replay_per_layer: int = 128
    baseline_alpha: float = 0.5
    sigma_init: float = 0.5


class Actor(nn.Module):
    """``state → 300 → 300 → 1``, ReLU, sigmoid output (an action in [0, 1])."""

    def __init__(self, state_dim: int, hidden: int = 300) -> None:
        super().__init__()
        self.fc1 = nn.Linear(state_dim, hidden)
        self.fc2 = nn.Linear(hidden, hidden)
        self.fc3 = nn.Linear(hidden, 1)

    def forward(self, state: Tensor) -> Tensor:
        return torch.sigmoid(self.fc3(F.relu(self.fc2(F.relu(self.fc1(state))))))


class Critic(nn.Module):
    """``Q(s, a) = fc3(ReLU(fc2(ReLU(fc_s(s) + fc_a(a)))))``, hidden width 300."""

    def __init__(self, state_dim: int, hidden: int = 300) -> None:
        super().__init__()
        self.fc_state = nn.Linear(state_dim, hidden)
        self.fc_action = nn.Linear(1, hidden)
        self.fc2 = nn.Linear(hidden, hidden)
        self.fc3 = nn.Linear(hidden, 1)

    def forward(self, state: Tensor, action: Tensor) -> Tensor:
        hidden = F.relu(self.fc_state(state) + self.fc_action(action))
        return self.fc3(F.relu(self.fc2(hidden)))


class ReplayBuffer:
    """A ring buffer of transitions ``(state, action, reward, next_state, done)`` (numpy)."""

    def __init__(self, capacity: int, state_dim: int) -> None:
        if capacity < 1:
            raise ValueError(f"replay capacity must be ≥ 1, got {capacity}")
        self.capacity, self.state_dim = int(capacity), int(state_dim)
        self.states = np.zeros((capacity, state_dim), np.float32)
        self.next_states = np.zeros((capacity, state_dim), np.float32)
        self.actions = np.zeros((capacity, 1), np.float32)
        self.rewards = np.zeros((capacity, 1), np.float32)
        self.done = np.zeros((capacity, 1), np.float32)
        self.size = 0
        self.head = 0  # where the next transition goes

    def __len__(self) -> int:
        return self.size

    def append(
        self, state: np.ndarray, action: float, reward: float, next_state: np.ndarray, done: bool
    ) -> None:
        i = self.head
        self.states[i], self.next_states[i] = state, next_state
        self.actions[i, 0], self.rewards[i, 0], self.done[i, 0] = action, reward, float(done)
        self.head = (i + 1) % self.capacity
        self.size = min(self.size + 1, self.capacity)

    def sample(self, rng: np.random.Generator, batch: int) -> tuple[np.ndarray, ...]:
        """``batch`` transitions: without replacement when the buffer holds that many."""
        index = rng.choice(self.size, size=batch, replace=self.size < batch)
        return (
            self.states[index],
            self.actions[index],
            self.rewards[index].copy(),
            self.next_states[index],
            self.done[index],
        )

    def state_dict(self) -> dict[str, Any]:
        n = self.size
        return {
            "capacity": self.capacity,
            "state_dim": self.state_dim,
            "head": self.head,
            "size": n,
            # tensors, not numpy arrays: checkpoints load with weights_only=True
            **{k: torch.from_numpy(getattr(self, k)[:n].copy()) for k in _ARRAYS},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if (state["capacity"], state["state_dim"]) != (self.capacity, self.state_dim):
            raise ValueError(
                f"replay buffer of {state['capacity']}×{state['state_dim']} does not fit "
                f"{self.capacity}×{self.state_dim}"
            )
        self.head, self.size = int(state["head"]), int(state["size"])
        for key in _ARRAYS:
            getattr(self, key)[: self.size] = np.asarray(state[key])


_ARRAYS = ("states", "actions", "rewards", "next_states", "done")


@contextmanager
def one_thread() -> Iterator[None]:
    """Run the enclosed torch work on one CPU thread, then restore the thread count."""
    threads = torch.get_num_threads()
    if threads == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def truncated_normal(rng: np.random.Generator, mean: float, sigma: float) -> float:
    """One draw of a normal(``mean``, ``sigma``) truncated to [0, 1], by inverting the CDF
    (the interval always holds the mean, so no tail is far out)."""
    mean = float(np.clip(mean, 0.0, 1.0))
    if sigma <= 0:
        return mean
    normal = NormalDist(mean, sigma)
    low, high = normal.cdf(0.0), normal.cdf(1.0)
    u = float(np.clip(rng.uniform(low, high), 1e-15, 1.0 - 1e-15))
    return float(np.clip(normal.inv_cdf(u), 0.0, 1.0))


class DDPGAgent:
    """DDPG for one continuous action in [0, 1] per step (see the module docstring).

    Args:
        state_dim: size of a state vector.
        capacity: replay buffer size in transitions (HAQ: 128 × layers).
        seed: seeds the networks' initialisation and the agent's numpy generator.
        config: the hyperparameters.
    """

    def __init__(
        self, state_dim: int, capacity: int, seed: int, config: DDPGConfig | None = None
    ) -> None:
        self.config = config or DDPGConfig()
        cfg = self.config
        with torch.random.fork_rng(devices=[]):  # the trial's global torch RNG is left alone
            torch.manual_seed(seed)
            self.actor, self.critic = Actor(state_dim, cfg.hidden), Critic(state_dim, cfg.hidden)
            self.actor_target = Actor(state_dim, cfg.hidden)
            self.critic_target = Critic(state_dim, cfg.hidden)
        self.actor_target.load_state_dict(self.actor.state_dict())
        self.critic_target.load_state_dict(self.critic.state_dict())
        for net in (self.actor_target, self.critic_target):
            net.requires_grad_(False)
        self.actor_optim = torch.optim.Adam(self.actor.parameters(), lr=cfg.lr_actor)
        self.critic_optim = torch.optim.Adam(self.critic.parameters(), lr=cfg.lr_critic)
        self.memory = ReplayBuffer(capacity, state_dim)
        self.rng = np.random.default_rng(seed)
        self.baseline: float | None = None
        self.updates = 0

    # --- acting -------------------------------------------------------------------------
    def random_action(self) -> float:
        """A uniform action in [0, 1] (warm-up episodes)."""
        return float(self.rng.uniform(0.0, 1.0))

    @torch.no_grad()
    def greedy_action(self, state: np.ndarray) -> float:
        """The actor's action for ``state``, without exploration."""
        with one_thread():
            return float(self.actor(torch.as_tensor(state, dtype=torch.float32)[None])[0, 0])

    def explore_action(self, state: np.ndarray, sigma: float) -> float:
        """The actor's action plus truncated-normal exploration of std ``sigma`` on [0, 1]."""
        return truncated_normal(self.rng, self.greedy_action(state), sigma)

    # --- learning -----------------------------------------------------------------------
    def observe(
        self, state: np.ndarray, action: float, reward: float, next_state: np.ndarray, done: bool
    ) -> None:
        """Store one transition in the replay buffer."""
        self.memory.append(state, action, reward, next_state, done)

    def update(self) -> tuple[float, float]:
        """One DDPG step on a replay minibatch: critic, actor, soft target updates.

        Returns ``(critic loss, actor loss)`` (the critic's mean squared TD error, the
        negated mean Q of the actor's actions).
        """
        with one_thread():
            return self._update()

    def _update(self) -> tuple[float, float]:
        cfg = self.config
        states, actions, rewards, next_states, done = (
            torch.from_numpy(a) for a in self.memory.sample(self.rng, cfg.batch_size)
        )
        batch_mean = float(rewards.mean())
        if self.baseline is None:
            self.baseline = batch_mean
        else:
            self.baseline += cfg.baseline_alpha * (batch_mean - self.baseline)
        rewards = rewards - self.baseline
        with torch.no_grad():
            next_q = self.critic_target(next_states, self.actor_target(next_states))
            target = rewards + cfg.discount * (1.0 - done) * next_q
        critic_loss = F.mse_loss(self.critic(states, actions), target)
        self.critic_optim.zero_grad(set_to_none=True)
        critic_loss.backward()
        self.critic_optim.step()

        actor_loss = -self.critic(states, self.actor(states)).mean()
        self.actor_optim.zero_grad(set_to_none=True)
        actor_loss.backward()
        self.actor_optim.step()
        self.critic_optim.zero_grad(set_to_none=True)  # the actor's pass left critic grads

        self._soft_update(self.actor_target, self.actor)
        self._soft_update(self.critic_target, self.critic)
        self.updates += 1
        return critic_loss.item(), actor_loss.detach().item()

    @torch.no_grad()
    def _soft_update(self, target: nn.Module, source: nn.Module) -> None:
        """``θ' ← (1 − τ)·θ' + τ·θ``."""
        torch._foreach_lerp_(list(target.parameters()), list(source.parameters()), self.config.tau)

    # --- checkpoints --------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Everything to continue exactly: networks, optimisers, replay, baseline, RNG."""
        return {
            "config": asdict(self.config),
            "actor": self.actor.state_dict(),
            "critic": self.critic.state_dict(),
            "actor_target": self.actor_target.state_dict(),
            "critic_target": self.critic_target.state_dict(),
            "actor_optim": self.actor_optim.state_dict(),
            "critic_optim": self.critic_optim.state_dict(),
            "memory": self.memory.state_dict(),
            "rng": self.rng.bit_generator.state,
            "baseline": self.baseline,
            "updates": self.updates,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state["config"] != asdict(self.config):
            raise ValueError("the saved agent has other hyperparameters than this one")
        for key in ("actor", "critic", "actor_target", "critic_target"):
            getattr(self, key).load_state_dict(state[key])
        self.actor_optim.load_state_dict(state["actor_optim"])
        self.critic_optim.load_state_dict(state["critic_optim"])
        self.memory.load_state_dict(state["memory"])
        self.rng.bit_generator.state = state["rng"]
        self.baseline = state["baseline"]
        self.updates = int(state["updates"])
