"""HTTP plumbing shared by every app's API: errors, filtering, pagination, schema, routing."""
