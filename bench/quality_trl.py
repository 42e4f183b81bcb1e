"""Plain TRL 1.16, as a user who knows TRL would run it: the baseline of bench/quality.py.

    python bench/quality_trl.py sft|rm|dpo --data FILE --output DIR --seed N [--max-steps N]

The common settings of issue 11: LoRA r=16 (alpha 32, dropout 0.05: TRL's ModelConfig defaults) on every
linear layer (the placement posttrain uses, so the comparison is of the optimisation settings), batch 8;
SFT lr 2e-4 for 2 epochs, RM lr 1e-4 for 2 epochs, DPO lr 5e-5 with beta 0.1 for 3 epochs; everything
else TRL's defaults (bf16 autocast among them; `use_cpu` on a machine without a GPU, as TRL asks), except
gradient checkpointing, which is off (on a CPU it costs several times the speed).
The model is the same local folder posttrain's default alias resolves to.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

SETTINGS = {  # stage: (TRL config class name, learning rate, epochs)
    "sft": ("SFTConfig", 2e-4, 2.0),
    "rm": ("RewardConfig", 1e-4, 2.0),
    "dpo": ("DPOConfig", 5e-5, 3.0),
}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("stage", choices=sorted(SETTINGS))
    parser.add_argument("--data", required=True)
    parser.add_argument("--output", required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-steps", type=int, default=-1, help="only for smoke runs (--quick)")
    args = parser.parse_args(argv)

    import torch
    import trl
    from datasets import load_dataset
    from peft import LoraConfig
    from transformers import AutoTokenizer

    from posttrain.models import resolve_model

    model = resolve_model("smollm2-135m-instruct")
    tokenizer = AutoTokenizer.from_pretrained(model)
    data = load_dataset("json", data_files=args.data, split="train")
    data = data.select_columns([c for c in ("prompt", "completion", "chosen", "rejected") if c in data.column_names])
    config_name, lr, epochs = SETTINGS[args.stage]
    config = getattr(trl, config_name)(
        output_dir=args.output, learning_rate=lr, num_train_epochs=epochs, max_steps=args.max_steps,
        per_device_train_batch_size=8, gradient_checkpointing=False, use_cpu=not torch.cuda.is_available(), seed=args.seed, report_to="none",
        save_strategy="no", logging_steps=10, **({"beta": 0.1} if args.stage == "dpo" else {}))
    peft_config = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.05, target_modules="all-linear",
                             task_type="SEQ_CLS" if args.stage == "rm" else "CAUSAL_LM")
    trainer_class = {"sft": trl.SFTTrainer, "rm": trl.RewardTrainer, "dpo": trl.DPOTrainer}[args.stage]
    trainer = trainer_class(model=model, args=config, train_dataset=data, processing_class=tokenizer, peft_config=peft_config)
    result = trainer.train()
    trainer.save_model(args.output)
    tokenizer.save_pretrained(args.output)
    Path(args.output, "trl_result.json").write_text(json.dumps({"steps": result.global_step, "train_loss": result.training_loss}))
    print(f"trl {args.stage}: {result.global_step} steps, loss {result.training_loss:.4f}", file=sys.stderr)


if __name__ == "__main__":
    main()
