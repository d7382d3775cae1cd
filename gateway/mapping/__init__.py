"""The mapping file: which normalized fields reach which backend, under which names.

`model` holds the resolved mapping the adapters take; `load` reads and checks a
file (`GATEWAY_MAPPING_FILE`); `values` applies a mapping to one profile. This
package imports nothing from `gateway.backends`, so adapters may import it.
"""
