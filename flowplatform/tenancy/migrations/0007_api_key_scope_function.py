# The statement that authenticates an API request and scopes its transaction (flowplatform.rls).

from django.db import migrations

from flowplatform.rls import create_api_key_function


class Migration(migrations.Migration):
    dependencies = [('tenancy', '0006_user_identity')]

    operations = [create_api_key_function()]
