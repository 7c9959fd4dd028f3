"""Evaluation of the guard: metrics (:mod:`.metrics`), evaluation sets (:mod:`.sets`), the OOD
evaluation against peers (:mod:`.ood`) and the report (:mod:`.report`)."""
