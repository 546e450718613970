# Row-level security on this app's tenant tables (flowplatform.rls).

from django.db import migrations

from flowplatform.rls import enable_row_level_security


class Migration(migrations.Migration):
    dependencies = [('outputs', '0002_history')]

    operations = [
        enable_row_level_security("outputs_taskoutput", "outputs_historicaltaskoutput"),
    ]
