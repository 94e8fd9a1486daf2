-- Parley directory schema, version 1 (SQLite).
-- Times are Unix milliseconds. Keys and hashes are raw bytes.
CREATE TABLE users (
	id            INTEGER PRIMARY KEY,
	username      TEXT NOT NULL UNIQUE,
	password_hash TEXT NOT NULL,
	created_at    INTEGER NOT NULL,
	updated_at    INTEGER NOT NULL
);

CREATE TABLE devices (
	id            INTEGER PRIMARY KEY,
	user_id       INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
	name          TEXT NOT NULL,
	public_key    BLOB NOT NULL UNIQUE,
	created_at    INTEGER NOT NULL,
	last_seen     INTEGER NOT NULL,
	online        INTEGER NOT NULL DEFAULT 0,
	online_server TEXT NOT NULL DEFAULT '',
	endpoints     TEXT NOT NULL DEFAULT '',
	updated_at    INTEGER NOT NULL
);
CREATE INDEX devices_user ON devices(user_id);
CREATE INDEX devices_online_server ON devices(online_server) WHERE online <> 0;

CREATE TABLE tokens (
	hash       BLOB PRIMARY KEY,
	user_id    INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
	device_id  INTEGER NOT NULL REFERENCES devices(id) ON DELETE CASCADE,
	created_at INTEGER NOT NULL,
	expires_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX tokens_user ON tokens(user_id);
CREATE INDEX tokens_device ON tokens(device_id);
CREATE INDEX tokens_expires ON tokens(expires_at);

-- One row per side of a relationship; see store.ContactState.
CREATE TABLE contacts (
	user_id    INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
	other_id   INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
	state      INTEGER NOT NULL,
	updated_at INTEGER NOT NULL,
	PRIMARY KEY (user_id, other_id)
) WITHOUT ROWID;
CREATE INDEX contacts_other ON contacts(other_id);

CREATE TABLE mail (
	id               INTEGER PRIMARY KEY,
	recipient_device INTEGER NOT NULL REFERENCES devices(id) ON DELETE CASCADE,
	sender_user      INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
	sender_key       BLOB NOT NULL,
	blob             BLOB NOT NULL,
	created_at       INTEGER NOT NULL
);
CREATE INDEX mail_recipient ON mail(recipient_device, id);
CREATE INDEX mail_sender ON mail(sender_user);

CREATE TABLE supernodes (
	device_id    INTEGER PRIMARY KEY REFERENCES devices(id) ON DELETE CASCADE,
	addr         TEXT NOT NULL,
	verified_at  INTEGER NOT NULL,
	reported_at  INTEGER NOT NULL,
	load         INTEGER NOT NULL,
	sessions     INTEGER NOT NULL,
	budget_rate  INTEGER NOT NULL,
	budget_bytes INTEGER NOT NULL
);
