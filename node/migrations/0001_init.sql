-- The daemon's state: who it is logged in as, its contacts and their
-- devices as last seen (so that it can reconnect while the directory server
-- is down), and the supernodes it knows.

CREATE TABLE settings (
	key   TEXT PRIMARY KEY,
	value TEXT NOT NULL
);

CREATE TABLE contacts (
	username   TEXT PRIMARY KEY,
	state      TEXT NOT NULL,
	updated_at INTEGER NOT NULL
);

CREATE TABLE devices (
	key         TEXT PRIMARY KEY,
	username    TEXT NOT NULL REFERENCES contacts(username) ON DELETE CASCADE,
	name        TEXT NOT NULL,
	endpoints   TEXT NOT NULL, -- JSON array of "ip:port"
	last_direct TEXT NOT NULL DEFAULT '', -- the last direct address a session used
	updated_at  INTEGER NOT NULL
);

CREATE TABLE supernodes (
	key        TEXT PRIMARY KEY,
	addr       TEXT NOT NULL,
	rtt_ms     REAL NOT NULL DEFAULT 0,
	updated_at INTEGER NOT NULL
);
