"""The local versioned store: run folders on disk and the query API over them."""
