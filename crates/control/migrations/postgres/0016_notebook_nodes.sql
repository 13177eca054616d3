-- The node whose disk holds a notebook's volume: only it mounts the volume and runs the
-- notebook's Jupyter; any node may ask for a change (the row's state), and that node carries
-- it out. `node_epoch` is the epoch of its lease when it last wrote the row, so a node that
-- lost its lease changes nothing of the notebook. Rows made before nodes existed have none:
-- the first node to start adopts them (in SQLite, the only one).
ALTER TABLE notebooks ADD COLUMN node TEXT;
ALTER TABLE notebooks ADD COLUMN node_epoch BIGINT;
-- Where a node's notebook relay listens (host:port), for other nodes to reach the notebooks
-- it runs over mutually authenticated TLS.
ALTER TABLE nodes ADD COLUMN relay_address TEXT;
