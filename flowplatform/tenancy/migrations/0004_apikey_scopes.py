# Existing keys keep working: they get both scopes.

import flowplatform.tenancy.models
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('tenancy', '0003_membership'),
    ]

    operations = [
        migrations.AddField(
            model_name='apikey',
            name='scopes',
            field=models.JSONField(default=flowplatform.tenancy.models.all_scopes, help_text="What the key may do: a list of 'read' (GET, HEAD, OPTIONS) and/or 'write' (POST, PUT, PATCH, DELETE)."),
        ),
    ]
