"""Downstream evaluation of checkpoints: LAMA / LAMA-UHN, a KG probe, Open Entity, TACRED, GLUE.

Design: the library is split by task (lama.py, kg_probe.py, entity_typing.py, relation_extraction.py,
glue.py) over shared parts (cloze.py: single-token objects and batched [MASK] predictions; finetune.py:
an encoder + linear head trained with AdamW; metrics.py: the scorers, pure Python). runner.py maps
(checkpoint, task) to a report entry, report.py writes the run's report and the `eval_results` dataset.
config.py is light (no torch) so flows/config.py can import it; torch and transformers are imported
only by the modules that run models.

Deviations from the paper (stated in the README too):
- LAMA uses one template sentence per fact (LAMA's default), on the full vocabulary unless a common
  vocabulary file is given (the paper does not say which it used).
- The LAMA-UHN person-name filter can use the evaluated model itself (`probe.uhn_name_model: self`,
  the default) instead of UHN's BERT-base-cased; pass bert-base-cased to reproduce the published set.
- Fine-tuning uses one recipe for every task (encoder + linear head over marker tokens, `@`/`#`
  punctuation markers instead of new special tokens); the paper follows DKPLM's per-task settings,
  which it does not list. Open Entity and TACRED run several seeds (mean ± std); GLUE one seed.
- The KG probe is ours (not in the paper): it shows what pre-training injected by splitting the run's
  KG facts into those used as CKA targets in training (seen) and the rest (unseen).
"""
