package sqlite_test

import "time"

var storetestTime = time.UnixMilli(1_800_000_000_000)
