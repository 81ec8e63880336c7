# References for models/text-encoders/decoder-lm.ts from transformers' own classes: for each family a
# scaled-down model with seeded random weights (Llama, Mistral, Qwen2, Qwen3; Qwen2.5-VL's text model is a
# Qwen2 on text positions), a right-padded batch of two prompts, and every entry of hidden_states.
# Writes test/fixtures/decoder-lm/<family>.safetensors: the checkpoint tensors (their transformers names),
# input_ids, attention_mask, hidden_state_<k> for k = 0 .. num_hidden_layers; the config as metadata.
#
#   python3 -m venv /tmp/refenv && /tmp/refenv/bin/pip install torch transformers safetensors numpy
#   /tmp/refenv/bin/python test/parity/make-decoder-lm-references.py [family ...]
import json
import os
import sys

import torch
import transformers
from safetensors.torch import save_file

OUT = os.path.join(os.path.dirname(__file__), '..', 'fixtures', 'decoder-lm')
BASE = dict(vocab_size=120, hidden_size=64, intermediate_size=96, num_hidden_layers=3, num_attention_heads=4,
            num_key_value_heads=2, rms_norm_eps=1e-6, max_position_embeddings=64, tie_word_embeddings=False)
FAMILIES = {
    'llama': (transformers.LlamaConfig, transformers.LlamaForCausalLM, dict(rope_theta=10000.0)),
    'mistral': (transformers.MistralConfig, transformers.MistralForCausalLM, dict(rope_theta=1000000.0, sliding_window=None)),
    'qwen2': (transformers.Qwen2Config, transformers.Qwen2ForCausalLM, dict(rope_theta=1000000.0)),
    'qwen3': (transformers.Qwen3Config, transformers.Qwen3ForCausalLM, dict(rope_theta=1000000.0, head_dim=24)),
    # Gemma 3's text model (LTX-2's encoder): (1 + w) RMSNorms around attention and MLP, q/k norms, scaled
    # embeddings, gelu-tanh MLP, query_pre_attn_scalar != head_dim, local layers with their own RoPE base and
    # a window longer than the prompts, global layers with linear RoPE scaling
    'gemma3': (transformers.Gemma3TextConfig, transformers.Gemma3ForCausalLM, dict(
        head_dim=16, query_pre_attn_scalar=24, sliding_window=16, hidden_activation='gelu_pytorch_tanh',
        layer_types=['sliding_attention', 'sliding_attention', 'full_attention'],
        rope_parameters={'sliding_attention': {'rope_type': 'default', 'rope_theta': 10000.0},
                         'full_attention': {'rope_type': 'linear', 'factor': 8.0, 'rope_theta': 1000000.0}})),
}


def main():
    os.makedirs(OUT, exist_ok=True)
    only = sys.argv[1:]  # family names to (re)make; default all
    for name, (cfg_cls, model_cls, extra) in FAMILIES.items():
        if only and name not in only:
            continue
        torch.manual_seed(0)
        cfg = cfg_cls(**BASE, **extra)
        cfg._attn_implementation = 'eager'
        model = model_cls(cfg).eval()
        with torch.no_grad():
            for p in model.parameters():  # larger than the default init, so every layer matters
                p.copy_(torch.randn_like(p) * 0.2 + (1.0 if p.dim() == 1 else 0.0))
        ids = torch.tensor([[5, 17, 33, 2, 91, 44, 7, 60, 11], [8, 3, 99, 14, 0, 0, 0, 0, 0]], dtype=torch.int64)
        mask = torch.tensor([[1] * 9, [1] * 4 + [0] * 5], dtype=torch.int64)
        with torch.no_grad():
            out = model.model(input_ids=ids, attention_mask=mask, output_hidden_states=True)
        tensors = {k: v.detach().float().contiguous() for k, v in model.state_dict().items() if k != 'lm_head.weight'}
        tensors['input_ids'] = ids
        tensors['attention_mask'] = mask
        for k, h in enumerate(out.hidden_states):
            tensors[f'hidden_state_{k}'] = h.float().contiguous()
        meta = {'config': json.dumps(cfg.to_dict()), 'transformers': transformers.__version__, 'torch': torch.__version__}
        save_file(tensors, os.path.join(OUT, f'{name}.safetensors'), metadata=meta)
        print(name, {k: list(v.shape) for k, v in tensors.items() if k.startswith('hidden')})


main()
