import factory
from django.contrib.auth import get_user_model

from accounts.models import Role
from licensing.models import License

DEFAULT_PASSWORD = "correct horse battery staple"
FAILSAFE_PASSWORD = "Unusual-Failsafe-Phrase-42"


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()
        skip_postgeneration_save = True

    username = factory.Sequence(lambda n: f"user{n:04d}")
    email = factory.LazyAttribute(lambda u: f"{u.username}@example.com")
    role = Role.USER

    @factory.post_generation
    def password(self, create, extracted, **kwargs):
        self.set_password(extracted or DEFAULT_PASSWORD)
        if create:
            self.save()


class SuperAdminFactory(UserFactory):
    role = Role.SUPERADMIN
    username = factory.Sequence(lambda n: f"root{n:02d}")


class AdminFactory(UserFactory):
    role = Role.ADMIN
    username = factory.Sequence(lambda n: f"admin{n:02d}")


class LicenseFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = License

    owner = factory.SubFactory(UserFactory)
    license_type = License.Type.STANDARD
    max_users = 5
    instance_name = factory.Sequence(lambda n: f"instance-{n}")
