"""The audit trail's formats: the hash chain and its verification (:mod:`~mas_core.audit.chain`),
the archive of trimmed entries (:mod:`~mas_core.audit.archive`) and the control plane's signed
checkpoints (:mod:`~mas_core.audit.checkpoints`)."""
