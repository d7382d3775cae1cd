"""Backend simulators: one Starlette app per backend, faithful to its vendor doc,
with fault switches, a request log and `/_sim/*` control endpoints.

- `ocamba`        Ocamba Hood create + import, rate limits (`ocamba_limits`).
- `omneo`         Omneo batch, processed in the background, answered by signed
                  webhooks (`omneo_validation`, `omneo_processing`, `omneo_store`,
                  `omneo_webhooks`, its `/_sim/*` routes in `omneo_control`).
- `import_batch`  import_batch with per-profile results (`import_batch_store`,
                  `import_batch_codes`).
- `common`        faults, request log, the shared request pipeline, control routes.
- `runner`        all three under uvicorn in one event loop (`serving`).
"""

from gateway.simulators.import_batch import create_import_batch_app
from gateway.simulators.ocamba import create_ocamba_app
from gateway.simulators.omneo import create_omneo_app

__all__ = ["create_import_batch_app", "create_ocamba_app", "create_omneo_app"]
