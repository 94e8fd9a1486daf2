-- The TCP port a supernode relays on for peers whose UDP is blocked
-- (0: none announced).
ALTER TABLE supernodes ADD COLUMN tcp_port INTEGER NOT NULL DEFAULT 0;
