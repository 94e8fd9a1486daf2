-- Parley directory schema, version 1 (PostgreSQL).
-- Times are Unix milliseconds. Keys and hashes are raw bytes.
CREATE TABLE users (
	id            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	username      TEXT COLLATE "C" NOT NULL UNIQUE,
	password_hash TEXT NOT NULL,
	created_at    BIGINT NOT NULL,
	updated_at    BIGINT NOT NULL
);

CREATE TABLE devices (
	id            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	user_id       BIGINT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
	name          TEXT NOT NULL,
	public_key    BYTEA NOT NULL UNIQUE,
	created_at    BIGINT NOT NULL,
	last_seen     BIGINT NOT NULL,
	online        INTEGER NOT NULL DEFAULT 0,
	online_server TEXT NOT NULL DEFAULT '',
	endpoints     TEXT NOT NULL DEFAULT '',
	updated_at    BIGINT NOT NULL
);
CREATE INDEX devices_user ON devices(user_id);
CREATE INDEX devices_online_server ON devices(online_server) WHERE online <> 0;

CREATE TABLE tokens (
	hash       BYTEA PRIMARY KEY,
	user_id    BIGINT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
	device_id  BIGINT NOT NULL REFERENCES devices(id) ON DELETE CASCADE,
	created_at BIGINT NOT NULL,
	expires_at BIGINT NOT NULL
);
CREATE INDEX tokens_user ON tokens(user_id);
CREATE INDEX tokens_device ON tokens(device_id);
CREATE INDEX tokens_expires ON tokens(expires_at);

-- One row per side of a relationship; see store.ContactState.
CREATE TABLE contacts (
	user_id    BIGINT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
	other_id   BIGINT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
	state      INTEGER NOT NULL,
	updated_at BIGINT NOT NULL,
	PRIMARY KEY (user_id, other_id)
);
CREATE INDEX contacts_other ON contacts(other_id);

CREATE TABLE mail (
	id               BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	recipient_device BIGINT NOT NULL REFERENCES devices(id) ON DELETE CASCADE,
	sender_user      BIGINT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
	sender_key       BYTEA NOT NULL,
	blob             BYTEA NOT NULL,
	created_at       BIGINT NOT NULL
);
CREATE INDEX mail_recipient ON mail(recipient_device, id);
CREATE INDEX mail_sender ON mail(sender_user);

CREATE TABLE supernodes (
	device_id    BIGINT PRIMARY KEY REFERENCES devices(id) ON DELETE CASCADE,
	addr         TEXT NOT NULL,
	verified_at  BIGINT NOT NULL,
	reported_at  BIGINT NOT NULL,
	load         INTEGER NOT NULL,
	sessions     INTEGER NOT NULL,
	budget_rate  BIGINT NOT NULL,
	budget_bytes BIGINT NOT NULL
);
