"""Pruning masks: ranking (:mod:`.ranking`), mask patterns (:mod:`.patterns`) and the public
``*_mask`` makers (:mod:`.masks`)."""
