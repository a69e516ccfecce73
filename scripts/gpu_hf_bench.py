#!/usr/bin/env python3
"""The reference path for scripts/gpu-check.sh: ICAE compression and decoding as getao/icae runs
them, through HuggingFace transformers + peft, on a random-weights Mistral-shaped model of the
same shape as `icae bench compress` / `icae bench decode`, so the two can be put side by side.

  compress: per context of L tokens, getao v2's segmentation (n = ceil(L / (S*4)) segments of
            ceil(L / n) tokens); each segment's embeddings with the S memory embeddings appended go
            through the model with LoRA (q_proj, v_proj) on, one segment per forward as getao does;
            slots = last hidden states at the memory positions.
  decode:   LoRA off, greedy, a P-token prompt then D new tokens, batch 1 (model.generate).

Prints one JSON object. Exit code 3 (and a line on stderr) when torch, transformers or peft cannot
be imported: the caller reports the comparison as skipped.
"""
import argparse
import json
import math
import sys
import time


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--hidden", type=int, default=1024)
    ap.add_argument("--layers", type=int, default=16)
    ap.add_argument("--heads", type=int, default=16)
    ap.add_argument("--kv-heads", type=int, default=4)
    ap.add_argument("--intermediate", type=int, default=2816)
    ap.add_argument("--vocab", type=int, default=32000)
    ap.add_argument("--lora-r", type=int, default=64)
    ap.add_argument("--mem-size", type=int, default=128)
    ap.add_argument("--lengths", default="512,2048,5120")
    ap.add_argument("--prompt-tokens", type=int, default=512)
    ap.add_argument("--decode-tokens", type=int, default=128)
    ap.add_argument("--reps", type=int, default=2)
    a = ap.parse_args()
    try:
        import torch
        import transformers
        import peft
    except Exception as e:  # any import failure means: no reference on this machine
        print(f"gpu_hf_bench: skipped, cannot import torch/transformers/peft ({e})", file=sys.stderr)
        return 3

    dev = torch.device(a.device)
    dtype = torch.bfloat16

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)

    torch.manual_seed(1)
    cfg = transformers.MistralConfig(
        vocab_size=a.vocab, hidden_size=a.hidden, intermediate_size=a.intermediate,
        num_hidden_layers=a.layers, num_attention_heads=a.heads, num_key_value_heads=a.kv_heads,
        max_position_embeddings=8192, rms_norm_eps=1e-5, rope_theta=10000.0,
        tie_word_embeddings=False)
    t0 = time.time()
    with torch.device(dev):
        model = transformers.MistralForCausalLM(cfg).to(dtype)
    model.eval()
    lora = peft.LoraConfig(r=a.lora_r, lora_alpha=32, lora_dropout=0.0, bias="none",
                           target_modules=["q_proj", "v_proj"])
    model = peft.get_peft_model(model, lora)
    # peft starts B at zero; random B makes the adapter do real work, as a trained one does.
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_" in n:
                p.normal_(0, 0.02)
    memory = (torch.randn(a.mem_size, a.hidden, device=dev) * 0.02).to(dtype)
    embed = model.get_input_embeddings()
    out = {"transformers": transformers.__version__, "peft": peft.__version__,
           "torch": torch.__version__, "device": str(dev),
           "attn_implementation": getattr(model.config, "_attn_implementation", "?"),
           "params": sum(p.numel() for p in model.parameters()), "build_seconds": time.time() - t0,
           "compress": [], "decode": {}}
    S = a.mem_size
    with torch.inference_mode():
        for L in [int(x) for x in a.lengths.split(",") if x]:
            g = torch.Generator().manual_seed(L)
            ids = torch.randint(3, a.vocab, (L,), generator=g).to(dev)
            n = math.ceil(L / (S * 4))
            seg = math.ceil(L / n)
            times = []
            for _ in range(max(1, a.reps)):
                sync()
                t = time.time()
                slots = []
                for k in range(n):
                    part = ids[k * seg:min(L, (k + 1) * seg)]
                    x = torch.cat([embed(part), memory], 0).unsqueeze(0)
                    h = model(inputs_embeds=x, output_hidden_states=True).hidden_states[-1]
                    slots.append(h[0, -S:])
                torch.cat(slots, 0)
                sync()
                times.append(time.time() - t)
            out["compress"].append({"context": L, "segments": n, "tokens_per_second": L / min(times)})
        g = torch.Generator().manual_seed(3)
        prompt = torch.randint(0, a.vocab, (1, a.prompt_tokens), generator=g).to(dev)
        with model.disable_adapter():
            base = model
            pre, total = [], []
            for _ in range(max(1, a.reps)):
                sync()
                t = time.time()
                base(input_ids=prompt)
                sync()
                pre.append(time.time() - t)
                t = time.time()
                base.generate(input_ids=prompt, attention_mask=torch.ones_like(prompt),
                              max_new_tokens=a.decode_tokens, min_new_tokens=a.decode_tokens,
                              do_sample=False, pad_token_id=0)
                sync()
                total.append(time.time() - t)
            p_med = sorted(pre)[len(pre) // 2]
            t_med = sorted(total)[len(total) // 2]
            out["decode"] = {"prompt_tokens": a.prompt_tokens, "decode_tokens": a.decode_tokens,
                             "prefill_tokens_per_second": a.prompt_tokens / p_med,
                             "decode_tokens_per_second": a.decode_tokens / max(1e-9, t_med - p_med)}
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
