# Row-level security on this app's tenant tables (flowplatform.rls).

from django.db import migrations

from flowplatform.rls import enable_row_level_security


class Migration(migrations.Migration):
    dependencies = [('executions', '0003_history')]

    operations = [
        enable_row_level_security("executions_flowexecution", "executions_taskexecution", "executions_correction", "executions_historicaltaskexecution"),
    ]
