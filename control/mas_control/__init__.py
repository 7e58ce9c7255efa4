"""mas_control: the control plane's work on the agents' Redis, shared by the operator and
``mas up``.

What it writes for the agents (:mod:`~mas_control.provision`: ACL users, the function library,
the policy, registry entries), the server's ACL file (:mod:`~mas_control.acl_file`), noticing a
server that lost all that and putting it back (:mod:`~mas_control.recovery`), and keeping the
audit trails (:mod:`~mas_control.audit_keeper`: signed checkpoints, archive-then-trim).

Depends on :mod:`mas_core` only; used by :mod:`mas_operator` and :mod:`mas_cli` (local mode).
"""
