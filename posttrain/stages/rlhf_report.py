"""What an RL run leaves behind: the finished chat checkpoint (policy adapter, critic, metrics, plots, samples,
model card), and the best policy by held-out reward."""

from __future__ import annotations

from pathlib import Path

from posttrain.config import RLHFConfig, to_dict
from posttrain.report import plot_curves, write_metrics, write_model_card
from posttrain.stages.common import finished_checkpoint, log, save_stage_files
from posttrain.stages.rlhf_roles import CRITIC, POLICY
from posttrain.stages.rlhf_state import save_adapter

ALGO_NAMES = {"ppo": "PPO", "grpo": "GRPO", "rloo": "RLOO", "reinforce_pp": "REINFORCE++"}


def sample_rows(step: int, tokenizer, rollout) -> list[dict]:
    rows = []
    for row, ids, n, stopped, score in zip(rollout.prompts, rollout.response, rollout.lengths.tolist(),
                                            rollout.has_stop.tolist(), rollout.raw_scores.tolist()):
        prompt = row["prompt"]
        text = prompt[-1]["content"] if isinstance(prompt, list) else prompt
        rows.append({"step": step, "prompt": text, "response": tokenizer.decode(ids[:n], skip_special_tokens=True).strip(),
                     "reward": score, "length": n, "stopped": stopped})
    return rows


def samples_markdown(samples: list[dict]) -> str:
    lines = ["| step | prompt | response | reward | tokens |", "|---|---|---|---|---|"]
    for row in samples:
        cells = [str(row["step"]), row["prompt"], row["response"] + ("" if row["stopped"] else " …(cut)"),
                 f"{row['reward']:.3f}", str(row["length"])]
        lines.append("| " + " | ".join(c.replace("|", "\\|").replace("\n", " ") for c in cells) + " |")
    return "\n".join(lines)


def save_best(output: Path, config: RLHFConfig, roles, base_path: str, record: dict) -> None:
    """The policy at its best held-out reward, as a chat checkpoint in ``<output>/best``."""
    with finished_checkpoint(output / "best") as folder:
        save_adapter(roles.model, POLICY, folder, base_path)
        roles.tokenizer.save_pretrained(folder)
        save_stage_files(folder, "rlhf", config, roles.base_name, reward_model=config.reward_model, best_step=record["step"],
                         eval_reward=record["eval_reward"])


def write_final(output: Path, config: RLHFConfig, roles, base_path: str, history: list[dict], samples: list[dict],
                stop_reason: str = "", best: dict | None = None, start_eval: dict | None = None) -> None:
    from safetensors.torch import save_file

    first, last = history[0], history[-1]
    window = history[-max(1, len(history) // 5):]
    final = {
        "algo": config.algo, "steps": len(history),
        "reward_first": first["reward_mean"], "reward_last": last["reward_mean"],
        "reward_last_window": sum(h["reward_mean"] for h in window) / len(window),
        "kl_last_window": sum(h["kl"] for h in window) / len(window),
        "response_length_first": first["response_length"], "response_length_last": last["response_length"],
        "hit_length_limit_last": last["hit_length_limit"], "beta_last": last["beta"],
        "seconds_per_step": sum(h["step_seconds"] for h in history) / len(history),
    }
    evals = ([start_eval] if start_eval else []) + [h for h in history if "eval_reward" in h]
    if evals:
        final.update(eval_reward_start=evals[0]["eval_reward"], eval_reward_last=evals[-1]["eval_reward"])
    curves = ([start_eval] if start_eval else []) + history  # the held-out curve starts at step 0
    if best:
        final.update(best_step=best["best_step"], best_eval_reward=best["best"])
    if stop_reason:
        final["stopped_early"] = stop_reason
    name = ALGO_NAMES[config.algo]
    sources = sorted({k[len("reward/"):] for h in history for k in h if k.startswith("reward/")})
    with finished_checkpoint(output) as folder:
        save_adapter(roles.model, POLICY, folder, base_path)
        if roles.critic_adapter:
            save_adapter(roles.model, CRITIC, folder / "critic", base_path)
        if roles.has_critic:
            (folder / "critic").mkdir(exist_ok=True)
            save_file({k: v.detach().cpu() for k, v in roles.value_head.state_dict().items()},
                      str(folder / "critic" / "value_head.safetensors"))
        roles.tokenizer.save_pretrained(folder)
        write_metrics(folder, final, history, samples=samples)
        plots = [plot_curves(folder / "rl.png", curves, [
            ("reward (training; held-out greedy)", ["reward_mean", "eval_reward"]),
            ("reward by source", [f"reward/{s}" for s in sources] if len(sources) > 1 else []),
            ("KL to reference (nats/response)", ["kl"]),
            ("response length (tokens)", ["response_length", "eval_response_length"]),
            ("hit length limit (share)", ["hit_length_limit"]),
        ], f"{name}: reward next to KL and length (watch for reward hacking)"),
            plot_curves(folder / "rl_losses.png", history, [
                ("losses", ["policy_loss", "value_loss", "kl_loss"]), ("health", ["clip_frac", "approx_kl"]),
                ("entropy", ["entropy"]), ("critic", ["explained_variance"]), ("beta", ["beta"]),
                ("rollout vs training log-prob gap", ["rollout_logprob_gap"]),
            ], f"{name} optimisation statistics")]
        (folder / "samples.md").write_text("# Sampled responses with their rewards\n\n" + samples_markdown(samples) + "\n")
        notes = f"Algorithm: {name}. Reward: {', '.join(_source_text(config))}. Samples: samples.md."
        if stop_reason:
            notes += f" Stopped early: {stop_reason}."
        if best:
            notes += f" Best held-out reward {best['best']:.3f} at step {best['best_step']}: `{output / 'best'}`."
        write_model_card(folder, f"RLHF ({name})", roles.base_name, config.prompts, to_dict(config), final,
                         [p for p in plots if p], notes=notes, output=output)
        save_stage_files(folder, "rlhf", config, roles.base_name, reward_model=config.reward_model, algo=config.algo)
    log(f"{name} done: reward {final['reward_first']:.3f} -> {final['reward_last_window']:.3f} (last-window mean), "
        f"KL {final['kl_last_window']:.3f}, length {final['response_length_first']:.1f} -> {final['response_length_last']:.1f}; "
        f"saved to {output}")


def _source_text(config: RLHFConfig) -> list[str]:
    out = [f"reward model `{config.reward_model}`"] if config.reward_model else []
    return out + [f"`{f.strip()}`" for f in config.reward_fn.split(",") if f.strip()]
