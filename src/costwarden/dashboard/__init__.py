"""The dashboard's domain: who may read and change what (``roles``). Pure policy here; the
admin keys are stored by ``storage.admin_keys`` and the pages are served by the gateway."""
