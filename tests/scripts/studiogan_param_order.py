#!/usr/bin/env python3
"""Checks tools/scripts/studiogan_convert.py's torch_parameter_order (the order `export` writes
Adam's state in) against StudioGAN's own: for each model in ENGINE_JSON ({key: [state_dict names
in the engine's order]}), the order it derives must equal the parameters of the StudioGAN
state_dict in tests/fixtures/studiogan_sagan.safetensors (metadata "shapes", the mirror's
state_dict order: a module's parameters, then its buffers, modules in registration order).
Exit 0 when every model agrees; otherwise one line per disagreement.
    python3 tests/scripts/studiogan_param_order.py ENGINE_JSON"""
import json
import os
import sys

here = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, os.path.join(here, "..", "tools", "scripts"))
from studiogan_convert import BUFFER_SUFFIXES, read_safetensors, torch_parameter_order  # noqa

_, meta = read_safetensors(os.path.join(here, "fixtures", "studiogan_sagan.safetensors"))
theirs = json.loads(meta["shapes"])
with open(sys.argv[1]) as f:
    ours = json.load(f)
bad = 0
for key, names in ours.items():
    want = [k for k in theirs[key] if not k.endswith(BUFFER_SUFFIXES)]
    got = torch_parameter_order({k: None for k in names})
    if got != want:
        bad += 1
        first = next(i for i, (a, b) in enumerate(zip(got + [None], want + [None])) if a != b)
        print(f"{key}: parameter {first}: {got[first] if first < len(got) else None} "
              f"vs StudioGAN's {want[first] if first < len(want) else None}")
sys.exit(1 if bad else 0)
