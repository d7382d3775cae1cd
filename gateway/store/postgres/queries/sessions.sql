-- The operator page's sessions (gateway/store/ops/sessions.py).

-- name: drop_expired_ui_sessions
DELETE FROM ui_sessions WHERE expires_at <= $1

-- name: add_ui_session
INSERT INTO ui_sessions (id_hash, app, expires_at) VALUES ($1, $2, $3)

-- name: ui_session_alive
SELECT 1 FROM ui_sessions WHERE id_hash = $1 AND expires_at > $2

-- name: end_ui_session
DELETE FROM ui_sessions WHERE id_hash = $1

-- name: end_all_ui_sessions
DELETE FROM ui_sessions
