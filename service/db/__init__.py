"""Database access: the connection pool, the migrations runner and the embedded local cluster."""
