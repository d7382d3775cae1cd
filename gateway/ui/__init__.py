"""The operator page at `/ui`: backend health, failures, replay, profile search.

Served by the gateway itself (the page's HTML, JS and CSS ship in this
package), behind the same API tokens as `/v1`.
"""
