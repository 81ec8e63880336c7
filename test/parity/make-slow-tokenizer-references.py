# Token ids transformers gives for the fixtures' tokenizers loaded from their slow files (T5Tokenizer from
# spiece.model, CLIPTokenizer and Qwen2Tokenizer from vocab.json + merges.txt), padding="max_length", truncation=True, for
# test/unit/slow-tokenizers.test.ts. Writes test/fixtures/slow-tokenizer-ids.json.
#   /tmp/refenv/bin/python test/parity/make-slow-tokenizer-references.py
import json
import os
import shutil
import tempfile

import transformers
from transformers import CLIPTokenizer, Qwen2Tokenizer, T5Tokenizer

ROOT = os.path.join(os.path.dirname(__file__), '..', 'fixtures')
PROMPTS = ['a large red circle at the center on a black background', '  Hello,   WORLD!! 123  ',
           'naïve café — «quotes» 日本語 <extra_id_3> x', "it's what we'll do", '',
           ' '.join(['red circle'] * 60),
           '<|im_start|>system\nDescribe the image:<|im_end|>\n<|im_start|>user\nA cat  sat\t on 2 mats.<|im_end|>\n']
CASES = [('wan2.1-random/tokenizer', T5Tokenizer, 64), ('flux1-random/tokenizer_2', T5Tokenizer, 64), ('flux1-random/tokenizer', CLIPTokenizer, 77),
         ('qwen-image-random/tokenizer', Qwen2Tokenizer, 96)]

out = {'transformers': transformers.__version__, 'prompts': PROMPTS, 'cases': []}
for rel, cls, max_length in CASES:
    with tempfile.TemporaryDirectory() as tmp:
        for f in os.listdir(os.path.join(ROOT, rel)):
            if f != 'tokenizer.json':  # the slow files only
                shutil.copy(os.path.join(ROOT, rel, f), tmp)
        tok = cls.from_pretrained(tmp)
        ids = [tok(p, padding='max_length', max_length=max_length, truncation=True).input_ids for p in PROMPTS]
    out['cases'].append({'dir': rel, 'class': cls.__name__, 'max_length': max_length, 'ids': ids})
json.dump(out, open(os.path.join(ROOT, 'slow-tokenizer-ids.json'), 'w'))
print('wrote', [c['dir'] for c in out['cases']])
