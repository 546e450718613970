# Row-level security on this app's tenant tables (flowplatform.rls).

from django.db import migrations

from flowplatform.rls import enable_row_level_security


class Migration(migrations.Migration):
    dependencies = [('webhooks', '0001_initial')]

    operations = [
        enable_row_level_security("webhooks_webhookendpoint", "webhooks_webhookevent", "webhooks_webhookdelivery", "webhooks_pendingsettlement"),
    ]
