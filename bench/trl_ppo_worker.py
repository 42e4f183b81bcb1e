"""One benchmark run of trl 1.12.0's experimental PPOTrainer (run by bench/ppo_vs_trl.py inside its own
virtualenv; imports only trl/transformers, never posttrain).

Layouts: "full" = policy, reference, reward and value as four separate full models (trl's default);
"peft" = the policy as a LoRA adapter with the reference as adapters-off, reward and value still full models.
Prints one JSON line: seconds per PPO step (one rollout batch + its PPO epochs) and peak resident memory.
"""

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch
from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer, TrainerCallback

sys.path.insert(0, str(Path(__file__).resolve().parent))
from peak_memory import peak_mib  # noqa: E402


class StepTimer(TrainerCallback):
    def __init__(self):
        self.marks = [time.perf_counter()]

    def on_step_end(self, args, state, control, **kwargs):
        self.marks.append(time.perf_counter())


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    parser.add_argument("--prompts", required=True, help="JSON list of chat prompts (lists of messages)")
    parser.add_argument("--layout", choices=["full", "peft"], required=True)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--minibatches", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--response-length", type=int, default=32)
    parser.add_argument("--lora-r", type=int, default=16)
    parser.add_argument("--threads", type=int, default=0)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from trl.experimental.ppo import PPOConfig, PPOTrainer

    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(args.model, padding_side="left")
    prompts = json.loads(open(args.prompts).read())
    ids = [tokenizer.apply_chat_template(p, add_generation_prompt=True, tokenize=True, return_dict=False) for p in prompts]
    ids = [i["input_ids"] if isinstance(i, dict) else list(i) for i in ids]
    dataset = Dataset.from_dict({"input_ids": ids})
    policy = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32)
    reward = AutoModelForSequenceClassification.from_pretrained(args.model, num_labels=1, dtype=torch.float32)
    value = AutoModelForSequenceClassification.from_pretrained(args.model, num_labels=1, dtype=torch.float32)
    for m in (reward, value):
        m.config.pad_token_id = tokenizer.pad_token_id
    peft_config, reference = None, None
    if args.layout == "peft":
        from peft import LoraConfig

        peft_config = LoraConfig(r=args.lora_r, lora_alpha=2 * args.lora_r, lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM")
    else:
        reference = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32)

    config = PPOConfig(
        output_dir=tempfile.mkdtemp(), per_device_train_batch_size=args.batch_size, gradient_accumulation_steps=1,
        num_mini_batches=args.minibatches, num_ppo_epochs=args.epochs, total_episodes=args.batch_size * args.steps,
        response_length=args.response_length, temperature=0.7, learning_rate=3e-5, kl_coef=0.05,
        missing_eos_penalty=1.0, stop_token="eos", local_rollout_forward_batch_size=args.batch_size,
        num_sample_generations=0, save_strategy="no", report_to="none", use_cpu=True, gradient_checkpointing=False,
        logging_steps=1, seed=0, dataloader_num_workers=0,
    )
    timer = StepTimer()
    trainer = PPOTrainer(args=config, processing_class=tokenizer, model=policy, ref_model=reference, reward_model=reward,
                         value_model=value, train_dataset=dataset, peft_config=peft_config, callbacks=[timer])
    timer.marks = [time.perf_counter()]
    trainer.train()
    steps = [b - a for a, b in zip(timer.marks, timer.marks[1:])]
    precision = "fp32 weights" + (", bf16 autocast" if config.bf16 else "")
    print("RESULT " + json.dumps({"impl": f"trl-1.12-{args.layout}", "step_seconds": steps, "peak_rss_mib": peak_mib(),
                                  "precision": precision}))


if __name__ == "__main__":
    sys.exit(main())
