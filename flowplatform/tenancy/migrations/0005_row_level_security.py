# Row-level security on this app's tenant tables (flowplatform.rls).

from django.db import migrations

from flowplatform.rls import enable_row_level_security


class Migration(migrations.Migration):
    dependencies = [('tenancy', '0004_apikey_scopes')]

    operations = [
        enable_row_level_security("tenancy_apikey", "tenancy_idempotencykey", "tenancy_membership"),
    ]
