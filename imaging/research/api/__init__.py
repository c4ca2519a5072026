"""REST resources of the research feature: projects (`projects`) and their cohorts (`cohorts`)."""

from imaging.research.api import cohorts, projects

routers = (projects.router, cohorts.router, cohorts.project_router)
