"""What test modules share. No test module imports another test module or conftest.py
(tests/test_test_layout.py checks it); a helper used by one module stays in that module.

- tenants: Tenant (an organization, its key and client), DEFINITION, random_uuid
- database: APP_ROLE, app_database_url, tenant_tables, snapshot_tenant_tables
- callables: python callables and executors flow definitions name by dotted path, CALLS, and
  the autouse fixture allow_test_callables (import it to use it)
- worker_tasks: callables for real db_worker subprocesses
- workers: start and stop real db_worker subprocesses, wait for a flow execution
- flows: flows created and run through the API, attempts, latest
- corrections: DAG shapes and correction drivers
- contract: the API's error shape and value checks
- proxy: a TCP proxy to PostgreSQL that a test cuts and restores
- leases: attempts a lost worker left behind, one-task python flows
- faults: faults caused for real rather than by replacing product functions
- browser: chromium for the real-browser tests
- fuzz_report: the schemathesis summary plugin (pytest_plugins in conftest.py)
"""
