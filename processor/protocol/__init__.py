"""The exactly-once protocol: a partition's lifecycle, recovery, the commit, snapshots."""
