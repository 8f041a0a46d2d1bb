"""The shipped methods measured on real solar cells: the elpv electroluminescence set.

``python -m benchmarks.elpv eval-elpv`` (needs the `eval` extra; `--method finetune` and
`--method synthetic` the `train` extra too). Modules: `data` (the set and its fixed split),
`classify` and `graph` (logistic head over dihedral views), `finetune`, `views`, `synthetic`
and `synthetic_defects` (torch), `evaluate` (one run: fit, score, time, report), `cli`.
"""
