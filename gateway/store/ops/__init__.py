"""Store operations written once for both engines, as plans (`gateway.store.plans`).

One module a topic; each names its queries, which each engine defines in
`gateway/store/<engine>/queries/<topic>.sql`. `gateway.store.core.StoreCore`
runs them; the engine packages keep only what truly differs.
"""
