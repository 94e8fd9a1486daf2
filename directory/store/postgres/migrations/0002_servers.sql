-- Server processes and their heartbeats, so that the devices a crashed
-- process held can be marked offline by the others.
CREATE TABLE servers (
	id           TEXT PRIMARY KEY,
	heartbeat_at BIGINT NOT NULL
);
