-- Chat history and outbox. Table names start with chat_ so that the daemon
-- may keep them in its own database.

-- One row per message, either way. A message is identified by its peer,
-- its direction and its 128-bit random ID (32 hex digits): a retried or
-- relayed copy of a message hits the primary key and is stored once.
CREATE TABLE chat_messages (
	peer            TEXT    NOT NULL,
	outgoing        INTEGER NOT NULL,           -- 1: we sent it
	id              TEXT    NOT NULL,
	body            TEXT    NOT NULL,
	sent_at         INTEGER NOT NULL,           -- sender's clock, Unix ms
	stored_at       INTEGER NOT NULL,           -- our clock, Unix ms
	state           INTEGER NOT NULL,           -- chat.State, only ever increases
	updated_at      INTEGER NOT NULL,
	receipt_pending INTEGER NOT NULL DEFAULT 0, -- incoming, read, receipt not yet delivered
	PRIMARY KEY (peer, outgoing, id)
);

CREATE INDEX chat_messages_history ON chat_messages (peer, stored_at);

-- Outgoing messages not yet acknowledged by the peer's device. A row is
-- written in the same transaction as its message and deleted when the
-- DELIVERED acknowledgement arrives, so that a crash loses nothing.
CREATE TABLE chat_outbox (
	peer     TEXT    NOT NULL,
	id       TEXT    NOT NULL,
	attempts INTEGER NOT NULL DEFAULT 0,
	PRIMARY KEY (peer, id)
);

-- Full-text index of message bodies (external content: the text lives in
-- chat_messages once).
CREATE VIRTUAL TABLE chat_fts USING fts5 (body, content = 'chat_messages', content_rowid = 'rowid');

CREATE TRIGGER chat_messages_ai AFTER INSERT ON chat_messages BEGIN
	INSERT INTO chat_fts (rowid, body) VALUES (new.rowid, new.body);
END;

CREATE TRIGGER chat_messages_ad AFTER DELETE ON chat_messages BEGIN
	INSERT INTO chat_fts (chat_fts, rowid, body) VALUES ('delete', old.rowid, old.body);
END;
